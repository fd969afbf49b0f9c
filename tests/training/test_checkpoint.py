import pickle

import pytest
import torch

from anogan.config import load_config
from anogan.errors import CheckpointError
from anogan.models.fanogan import FAnoGAN
from anogan.scoring.scorer import score_slices
from anogan.training.checkpoint import load_checkpoint, load_model, save_checkpoint, save_model


def test_save_load_score_gives_identical_scores(tiny_config, tmp_path):
    torch.manual_seed(1)
    model = FAnoGAN(tiny_config.model, 32).eval()
    images = torch.rand(5, 1, 48, 40) * 2 - 1
    masks = torch.ones_like(images)
    before = score_slices(model, images, masks, tiny_config.scoring)

    calibration = {"threshold": 0.5, "heatmap_max": 1.0}
    digest = save_model(model, tiny_config, calibration, {"data": "test"}, tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    after = score_slices(loaded.model, images, masks, loaded.config.scoring)

    assert torch.equal(before.score, after.score)
    assert torch.equal(before.pixel_maps, after.pixel_maps)
    assert loaded.calibration == calibration
    assert loaded.config == tiny_config
    assert loaded.info["sha256"] == digest


def test_a_file_that_is_not_a_checkpoint_is_refused_by_name(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("hello")
    with pytest.raises(CheckpointError, match=r"notes\.pt"):
        load_checkpoint(path)


def test_a_foreign_torch_file_is_refused(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError, match="not an anogan checkpoint"):
        load_checkpoint(path)


class _Payload:
    def __reduce__(self):
        return (print, ("code ran",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"format": "anogan-checkpoint", "x": _Payload()}, path, pickle_module=pickle)
    with pytest.raises(CheckpointError, match=r"evil\.pt"):
        load_checkpoint(path)
    assert "code ran" not in capsys.readouterr().out


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint({"step": 1}, path)
    save_checkpoint({"step": 2}, path)
    assert load_checkpoint(path)["step"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_a_training_checkpoint_is_not_taken_for_a_model(tmp_path):
    save_checkpoint({"stage": "wgan"}, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="resume"):
        load_model(tmp_path / "w.pt")


def test_model_config_of_demo_loads():
    assert load_config("configs/demo.yaml").model.channels[0] > 0


def test_random_state_round_trip_draws_the_same_numbers():
    from anogan.training.checkpoint import random_state, restore_random_state

    torch.manual_seed(3)
    saved = random_state()
    first = torch.rand(5)
    torch.rand(100)
    restore_random_state(saved)
    assert torch.equal(torch.rand(5), first)
    assert set(saved) <= {"cpu", "cuda"}
