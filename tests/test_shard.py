"""Sharded scoring: `anogan score --shard I/N` and `anogan merge` give the unsharded outputs."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from anogan.cli import main
from anogan.io import ReadFailure, iter_series
from anogan.scoring.shard import ShardError, ShardSpec
from anogan.training.checkpoint import load_model, save_model
from tests.scoring.phantom import (
    lesion_mask,
    lesion_volume,
    phantom,
    save_png,
    trained_model,
    with_lesion,
    write_ct_series,
)

# Series UIDs chosen so that 2 shards get 2 and 1 of them (sha256 of the UID, mod 2).
SERIES_UIDS = ("2.25.1", "2.25.2", "2.25.3")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return trained_model(tmp_path_factory.getbasetemp() / "phantom-model")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """Healthy phantoms, one with a lesion, two corrupt files.

    `ward/lesion.png` and `ward_lesion.png` both give the series name `ward_lesion.png` and fall
    in different shards: the merge must number them as an unsharded run does.
    """
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(5)
    for index in range(3):
        save_png(root / f"healthy_{index}.png", phantom(rng))
    save_png(root / "ward" / "lesion.png", with_lesion(phantom(rng), lesion_mask()))
    save_png(root / "ward_lesion.png", phantom(rng))
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n and then nothing")
    (root / "cracked.png").write_bytes(b"not an image at all")
    return root


@pytest.fixture(scope="module")
def volume_folder(tmp_path_factory) -> Path:
    """A NIfTI volume with a lesion, a 4D file of two volumes, a corrupt file."""
    root = tmp_path_factory.mktemp("volumes")
    affine = np.diag([0.9, 0.9, 3.0, 1.0])
    volume, _ = lesion_volume(4, (2,))
    nib.save(nib.Nifti1Image(np.transpose(volume, (2, 1, 0)), affine), root / "head.nii.gz")
    pair = np.stack([lesion_volume(3, (), seed=seed)[0] for seed in (1, 2)], axis=-1)
    nib.save(nib.Nifti1Image(np.transpose(pair, (2, 1, 0, 3)), affine), root / "twin.nii.gz")
    (root / "broken.nii.gz").write_bytes(b"\x1f\x8b but not a volume")
    return root


@pytest.fixture(scope="module")
def dicom_folder(tmp_path_factory) -> Path:
    """Three CT series (one with a lesion) in their own folders, and a truncated DICOM file."""
    root = tmp_path_factory.mktemp("dicom")
    for number, uid in enumerate(SERIES_UIDS):
        volume, _ = lesion_volume(3, (1,) if number == 1 else (), seed=number)
        write_ct_series(root / f"series_{number}", volume, series_uid=uid)
    (root / "truncated.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10")
    return root


def _score(kind: str, folder: Path, model: Path, out: Path, *extra: str) -> int:
    return main(
        ["score", f"--{kind}", str(folder), "--model", str(model), "--out", str(out), *extra]
    )


def _sharded(kind: str, folder: Path, model: Path, out: Path, monkeypatch) -> list[int]:
    """Shard 0/2 by --shard, shard 1/2 as a torchrun rank; then the merge."""
    codes = [_score(kind, folder, model, out, "--shard", "0/2")]
    with monkeypatch.context() as patched:
        patched.setenv("RANK", "1")
        patched.setenv("WORLD_SIZE", "2")
        codes.append(_score(kind, folder, model, out))
    codes.append(main(["merge", str(out)]))
    return codes


def _summary(folder: Path) -> dict:
    return json.loads((folder / "summary.json").read_text())


def _assert_same_outputs(single: Path, merged: Path) -> None:
    for name in ("scores.csv", "failures.csv", "config.yaml"):
        assert (merged / name).read_bytes() == (single / name).read_bytes(), name
    expected, received = _summary(single), _summary(merged)
    assert received["counts"] == expected["counts"]
    assert received["series"] == expected["series"]
    for entry in expected["series"]:
        one, other = nib.load(single / entry["map_file"]), nib.load(merged / entry["map_file"])
        assert np.array_equal(one.get_fdata(), other.get_fdata())
        assert np.array_equal(one.affine, other.affine)
        if (single / entry["preview_file"]).is_file():
            expected_previews = np.load(single / entry["preview_file"])
            received_previews = np.load(merged / entry["preview_file"])
            for name in expected_previews.files:
                assert np.array_equal(expected_previews[name], received_previews[name]), name
    files = {path.relative_to(single).as_posix() for path in single.rglob("*") if path.is_file()}
    merged_files = {
        path.relative_to(merged).as_posix()
        for path in merged.rglob("*")
        if path.is_file() and not path.relative_to(merged).as_posix().startswith("shard-")
    }
    assert merged_files == files
    assert (merged / "report" / "index.html").is_file()


def test_a_sharded_score_of_a_folder_equals_the_unsharded_one(
    model_dir, image_folder, tmp_path, monkeypatch
):
    single, merged = tmp_path / "single", tmp_path / "sharded"
    assert _score("images", image_folder, model_dir, single) == 3
    assert _sharded("images", image_folder, model_dir, merged, monkeypatch) == [3, 3, 3]

    # Each shard holds part of the input; each has its own `ward_lesion.png`.
    shard_names = [
        [entry["name"] for entry in _summary(merged / f"shard-{index}-of-2")["series"]]
        for index in range(2)
    ]
    assert all("ward_lesion.png" in names for names in shard_names)
    assert len(shard_names[0]) + len(shard_names[1]) == _summary(single)["counts"]["series"]
    assert [row for row in _summary(merged)["series"] if row["name"] == "ward_lesion.png-2"]
    _assert_same_outputs(single, merged)


def test_sharded_volumes_keep_their_order_and_failures(
    model_dir, volume_folder, tmp_path, monkeypatch
):
    single, merged = tmp_path / "single", tmp_path / "sharded"
    assert _score("nifti", volume_folder, model_dir, single) == 3
    assert _sharded("nifti", volume_folder, model_dir, merged, monkeypatch) == [0, 3, 3]
    assert [entry["series_id"] for entry in _summary(merged)["series"]] == [
        "head",
        "twin_v000",
        "twin_v001",
    ]
    _assert_same_outputs(single, merged)


def test_dicom_series_are_neither_lost_nor_split_nor_duplicated(
    model_dir, dicom_folder, tmp_path, monkeypatch
):
    single, merged = tmp_path / "single", tmp_path / "sharded"
    assert _score("dicom", dicom_folder, model_dir, single) == 3
    _sharded("dicom", dicom_folder, model_dir, merged, monkeypatch)

    per_shard = [
        [entry["metadata"]["SeriesInstanceUID"] for entry in _summary(folder)["series"]]
        for folder in (merged / "shard-0-of-2", merged / "shard-1-of-2")
    ]
    assert sorted(len(uids) for uids in per_shard) == [1, 2]
    assert sorted(per_shard[0] + per_shard[1]) == sorted(SERIES_UIDS)
    assert all(entry["shape"][0] == 3 for entry in _summary(merged)["series"])
    assert _summary(merged)["counts"]["failures"] == 1
    # Secondary Capture files hold new UIDs: the same files, not the same bytes.
    assert sorted(path.name for path in (merged / "dicom").rglob("*.dcm")) == sorted(
        path.name for path in (single / "dicom").rglob("*.dcm")
    )
    _assert_same_outputs(single, merged)


@pytest.mark.parametrize("value", ["3/2", "a/b", "1/0", "2/2", "1/2/3", "-1/2", " "])
def test_bad_shard_values_exit_2_with_one_line(model_dir, image_folder, tmp_path, capsys, value):
    out = tmp_path / "out"
    code = _score("images", image_folder, model_dir, out, f"--shard={value}")
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(error) == 1 and "--shard" in error[0] and "expected I/N with 0 <= I < N" in error[0]
    assert not out.exists()


def test_a_shard_needs_an_output_folder(model_dir, image_folder, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert main(["score", "--images", str(image_folder), "--model", str(model_dir)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "shard 0/3" in error[0] and "--out" in error[0]


def test_shard_spec_from_the_environment():
    assert ShardSpec.from_environment({"RANK": "2", "WORLD_SIZE": "4"}) == ShardSpec(2, 4)
    assert ShardSpec.from_environment({"RANK": "0", "WORLD_SIZE": "1"}) is None
    assert ShardSpec.from_environment({}) is None
    with pytest.raises(ShardError, match="RANK/WORLD_SIZE"):
        ShardSpec.from_environment({"RANK": "4", "WORLD_SIZE": "4"})


def test_every_item_is_in_exactly_one_shard():
    keys = [f"scan_{index}.png" for index in range(200)] + [f"2.25.{n}" for n in range(200)]
    owners = [
        [spec.index for spec in map(ShardSpec, range(5), [5] * 5) if spec.owns(key)] for key in keys
    ]
    assert all(len(owner) == 1 for owner in owners)
    assert sorted({owner[0] for owner in owners}) == list(range(5))


def test_select_sees_every_item_in_reading_order_and_skips_the_refused(
    image_folder, volume_folder, dicom_folder
):
    offered: list[str] = []

    def nothing(key: str) -> bool:
        offered.append(key)
        return False

    assert list(iter_series(image_folder, "image", select=nothing)) == []
    assert offered == [
        "broken.png",
        "cracked.png",
        "healthy_0.png",
        "healthy_1.png",
        "healthy_2.png",
        "ward/lesion.png",
        "ward_lesion.png",
    ]
    offered.clear()
    assert list(iter_series(dicom_folder, "dicom", select=nothing)) == []
    assert offered == ["truncated.dcm", *SERIES_UIDS]

    offered.clear()
    kept = list(iter_series(volume_folder, "nifti", select=lambda key: key != "twin.nii.gz"))
    everything = list(iter_series(volume_folder, "nifti"))
    assert [item.source for item in kept if isinstance(item, ReadFailure)] == ["broken.nii.gz"]
    assert [item.series_id for item in kept if not isinstance(item, ReadFailure)] == ["head"]
    assert len(everything) == 4


@pytest.fixture(scope="module")
def other_model(model_dir, tmp_path_factory) -> Path:
    """Another model: the phantom model with its generator's weights nudged, saved anew."""
    trained = load_model(model_dir)
    with torch.no_grad():
        for parameter in trained.model.generator.parameters():
            parameter.mul_(1.01)
    path = tmp_path_factory.mktemp("other-model") / "model.pt"
    save_model(trained.model, trained.config, trained.calibration, trained.info, path)
    return path


def test_merging_shards_of_different_models_fails(
    model_dir, other_model, volume_folder, tmp_path, capsys
):
    out = tmp_path / "out"
    _score("nifti", volume_folder, model_dir, out, "--shard", "0/2")
    _score("nifti", volume_folder, other_model, out, "--shard", "1/2")
    capsys.readouterr()

    assert main(["merge", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "model sha256 differs" in error[0]
    assert not (out / "summary.json").exists()


def test_merging_needs_every_shard_once(model_dir, volume_folder, tmp_path, capsys):
    out = tmp_path / "out"
    _score("nifti", volume_folder, model_dir, out, "--shard", "1/2")
    shard = out / "shard-1-of-2"
    capsys.readouterr()

    assert main(["merge", str(out)]) == 2
    assert "expected each of 0/2 ... 1/2 exactly once" in capsys.readouterr().err
    assert main(["merge", str(out), str(shard), str(shard)]) == 2
    assert "1/2, 1/2 given" in capsys.readouterr().err
    assert main(["merge", str(tmp_path / "empty")]) == 2
    assert "no shard folders" in capsys.readouterr().err
