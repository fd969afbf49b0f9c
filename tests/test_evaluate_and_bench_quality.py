"""`anogan evaluate` and the quality benchmark, end to end on a tiny demo set."""

import json
import shutil

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from anogan.cli import main as cli_main
from anogan.config import ComputeConfig, ModelConfig, config_from_dict
from anogan.data.patches import PatchSampler
from anogan.data.sources import resolve_evaluation_data
from anogan.errors import DataError
from anogan.models.autoencoder import AutoEncoder
from anogan.scoring.scorer import score_slices
from anogan.training.autoencoder import train_autoencoder
from pipelines import bench_quality
from pipelines.train_healthy import run_training
from tests.conftest import TINY


@pytest.fixture(scope="module")
def tiny_model(tiny_demo, tmp_path_factory):
    config = config_from_dict({**TINY, "output_dir": str(tmp_path_factory.mktemp("runs"))})
    return run_training(config, str(tiny_demo), track=False)


def test_evaluate_writes_figures_with_the_models_own_threshold(tiny_model, tiny_demo, tmp_path):
    out = tmp_path / "eval"
    argv = ["evaluate", "--model", str(tiny_model.model_path), "--data", str(tiny_demo)]
    code = cli_main([*argv, "--out", str(out), "--repeats", "50"])
    assert code == 0
    results = json.loads((out / "evaluation.json").read_text())
    names = [item["name"] for item in results["detectors"]]
    assert names[0] == "f-AnoGAN" and len(names) == 4 and "pixel std" in names[1]
    assert results["counts"]["healthy"] == 12 and results["counts"]["anomalous"] == 12
    assert results["threshold"] == pytest.approx(tiny_model.metrics["threshold"])
    model = results["detectors"][0]
    assert {"all", "bright", "dark", "ring"} <= set(model["roc_auc"])
    interval = model["roc_auc"]["all"]
    assert interval["low"] <= interval["value"] <= interval["high"]
    assert 0.0 <= model["false_positive_rate"]["value"] <= 1.0
    assert -1.0 <= model["contrast_spearman"] <= 1.0
    assert {"all", "bright-0.03", "texture-0.1"} <= set(model["localisation"])
    assert "| f-AnoGAN |" in (out / "evaluation.md").read_text()


def test_evaluate_with_changed_scoring_leaves_out_the_threshold_figures(
    tiny_model, tiny_demo, tmp_path, capsys
):
    argv = ["evaluate", "--model", str(tiny_model.model_path), "--data", str(tiny_demo)]
    argv += ["--no-lesions", "--repeats", "20"]
    plain, flipped = tmp_path / "plain", tmp_path / "flipped"
    assert cli_main([*argv, "--out", str(plain)]) == 0
    assert cli_main([*argv, "--out", str(flipped), "--set", "scoring.flip=true"]) == 0

    before = json.loads((plain / "evaluation.json").read_text())
    after = json.loads((flipped / "evaluation.json").read_text())
    assert after["threshold"] is None and after["scoring"]["flip"] is True
    assert after["detectors"][0]["false_positive_rate"] is None
    assert before["detectors"][0]["false_positive_rate"] is not None
    assert after["detectors"][0]["roc_auc"] != before["detectors"][0]["roc_auc"]
    assert after["detectors"][1] == before["detectors"][1]  # the baselines do not move

    capsys.readouterr()
    assert cli_main([*argv, "--set", "wgan.lr=1"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "only scoring.*" in error[0]


def test_evaluate_fails_in_one_line_on_unlabelled_data(tiny_model, tmp_path, capsys):
    (tmp_path / "plain").mkdir()
    code = cli_main(
        ["evaluate", "--model", str(tiny_model.model_path), "--data", str(tmp_path / "plain")]
    )
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(error) == 1
    assert str(tmp_path / "plain") in error[0] and "labelled" in error[0]


def test_labelled_folders_and_test_rows_are_evaluation_data(tiny_demo, tmp_path):
    root = tmp_path / "set"
    (root / "healthy").mkdir(parents=True)
    (root / "tumor" / "glioma").mkdir(parents=True)
    healthy = sorted((tiny_demo / "dev_val" / "healthy").glob("*.png"))[:3]
    lesions = sorted((tiny_demo / "dev_val" / "lesion").glob("*.png"))[:2]
    for path in healthy:
        shutil.copy(path, root / "healthy" / path.name)
    for path in lesions:
        shutil.copy(path, root / "tumor" / "glioma" / path.name)
    dataset = resolve_evaluation_data(root)
    assert (
        sorted((item.label, item.subtype) for item in dataset.items)
        == [(0, "healthy")] * 3 + [(1, "glioma")] * 2
    )

    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "path,label,role\n"
        + "".join(f"{path},0,train\n" for path in healthy)
        + "".join(f"{path},1,test\n" for path in lesions)
    )
    items = resolve_evaluation_data(manifest).items
    assert [item.label for item in items] == [1, 1]
    with pytest.raises(DataError, match="no evaluation inputs"):
        manifest.write_text("path,label,role\n" + f"{healthy[0]},0,train\n")
        resolve_evaluation_data(manifest)


def test_autoencoder_learns_and_scores_like_the_gan(tiny_demo):
    from anogan.data.dataset import load_slices
    from anogan.data.sources import resolve_data

    config = config_from_dict(TINY)
    train = load_slices(resolve_data(str(tiny_demo)).train, config.data, "train")
    sampler = PatchSampler(train.images, train.masks, 32, seed=0)
    model = AutoEncoder(ModelConfig(latent_dim=16, channels=(8, 16, 32, 64)), 32)
    fixed = sampler.sample(16)
    before = (model.eval()(fixed) - fixed).square().mean().item()
    result = train_autoencoder(model, sampler, ComputeConfig(device="cpu"), 8, 2e-3, 0, 60)
    after = (model(fixed) - fixed).square().mean().item()
    assert result.steps == 60 and after < 0.7 * before
    scores = score_slices(model, train.images[:4], train.masks[:4], config.scoring)
    assert scores.feature_residual.abs().max() == 0
    assert torch.allclose(scores.score, scores.image_residual)
    with pytest.raises(ValueError, match="budget"):
        train_autoencoder(model, sampler, ComputeConfig(device="cpu"), 8, 2e-3, 0)


def test_bench_quality_end_to_end_tracks_and_records(tiny_demo, mlflow_uri, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    config_file = tmp_path / "tiny.yaml"
    # Balanced sampling, so that both the GAN's and the autoencoder's draws go through it.
    config = {**TINY, "data": {**TINY["data"], "sampling": "balanced"}}
    config_file.write_text(json.dumps(config))  # JSON is YAML
    results = tmp_path / "results.md"
    results.write_text("# Results\n\nearlier text\n")
    argv = ["--data", str(tiny_demo), "--config", str(config_file), "--out", str(tmp_path)]
    argv += ["--repeats", "30", "--results", str(results)]
    assert bench_quality.main(argv) == 0

    out_dir = next(path for path in tmp_path.iterdir() if (path / "evaluation.json").is_file())
    summary = json.loads((out_dir / "evaluation.json").read_text())
    assert [item["name"] for item in summary["detectors"]][:2] == ["f-AnoGAN", "autoencoder"]
    assert summary["calibration_slices"] >= 1
    timing = summary["timing"]
    assert timing["autoencoder_minutes"] >= 0.9 * timing["training_minutes"]
    assert set(summary["targets"]) == {
        "image_auc",
        "margin_over_baselines",
        "above_autoencoder",
        "pixel_auc",
        "training_minutes",
    }
    # The calibration inputs were held back from training, never the evaluated ones.
    rows = (out_dir / "manifest.csv").read_text().splitlines()[1:]
    assert {row.rsplit(",", 1)[1] for row in rows} == {"train", "calibration"}
    assert not any("dev_val" in row for row in rows)
    # --split-only holds back the same groups without training anything.
    split_dir = tmp_path / "split"
    argv_split = ["--data", str(tiny_demo), "--config", str(config_file), "--out", str(split_dir)]
    assert bench_quality.main([*argv_split, "--split-only"]) == 0
    (split_folder,) = split_dir.iterdir()
    assert sorted(path.name for path in split_folder.iterdir()) == ["config.yaml", "manifest.csv"]
    assert (split_folder / "manifest.csv").read_text().splitlines()[1:] == rows

    run = MlflowClient(tracking_uri=mlflow_uri).get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params.get("data.sampling") == "balanced"
    assert "bench/f-AnoGAN/roc_auc" in run.data.metrics
    assert "bench/autoencoder/pixel_roc_auc/all" in run.data.metrics

    text = results.read_text()
    assert text.startswith("# Results\n\nearlier text\n")
    assert text.count(bench_quality.BEGIN_MARK) == 1 and "| autoencoder |" in text
    assert "python -m pipelines.benchmark quality --data" in text
    # A second record replaces the section instead of adding one.
    outcome = {
        "timing": timing,
        "checks": summary["targets"],
        "counts": summary["counts"],
        "markdown": "| new table |\n",
        "run_id": "x",
    }
    bench_quality.record_results(results, "again", outcome)
    text = results.read_text()
    assert text.count(bench_quality.BEGIN_MARK) == 1 and "| new table |" in text
    assert "| autoencoder |" not in text and np.isfinite(timing["training_minutes"])
