"""`anogan score` as a user runs it: outputs, exit codes, bad inputs among good ones."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from anogan.cli import main
from anogan.export import SCORE_COLUMNS
from tests.scoring.phantom import lesion_mask, phantom, save_png, trained_model, with_lesion


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return trained_model(tmp_path_factory.getbasetemp() / "phantom-model")


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """Three healthy phantoms, one with a lesion (in a subfolder), one corrupt file."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(11)
    for index in range(3):
        save_png(root / f"healthy_{index}.png", phantom(rng))
    save_png(root / "ward" / "lesion.png", with_lesion(phantom(rng), lesion_mask()))
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but the rest is missing")
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_a_corrupt_file_is_reported_and_every_good_one_scored(model_dir, image_folder, tmp_path):
    out = tmp_path / "out"
    code = main(
        ["score", "--images", str(image_folder), "--model", str(model_dir), "--out", str(out)]
    )

    assert code == 3
    with open(out / "scores.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert tuple(header[: len(SCORE_COLUMNS)]) == SCORE_COLUMNS
    rows = _rows(out / "scores.csv")
    sources = sorted(row["source"] for row in rows)
    assert sources == ["healthy_0.png", "healthy_1.png", "healthy_2.png", "ward/lesion.png"]
    assert all(row["slice"] == "0" and row["flagged"] in ("0", "1") for row in rows)
    by_source = {row["source"]: row for row in rows}
    assert by_source["ward/lesion.png"]["flagged"] == "1"
    assert float(by_source["ward/lesion.png"]["score"]) > max(
        float(by_source[f"healthy_{index}.png"]["score"]) for index in range(3)
    )

    failures = _rows(out / "failures.csv")
    assert [row["source"] for row in failures] == ["broken.png"]
    assert failures[0]["reason"]
    for row in rows:
        assert (out / "maps" / f"{row['series']}.nii.gz").is_file()
    assert (out / "report" / "index.html").is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {
        "series": 4,
        "slices": 4,
        "flagged_series": 1,
        "flagged_slices": 1,
        "failures": 1,
    }


def test_the_closing_line_names_counts_and_report(model_dir, image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    main(["score", "--images", str(image_folder), "--model", str(model_dir), "--out", str(out)])
    closing = capsys.readouterr().out.strip().splitlines()[-1]
    assert "Scored 4 slices" in closing and "flagged 1 series" in closing
    assert "failed 1" in closing and str(out / "report" / "index.html") in closing


def test_nothing_scored_exits_2(model_dir, tmp_path):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / "junk.png").write_bytes(b"not an image")
    out = tmp_path / "out"
    assert (
        main(["score", "--images", str(inputs), "--model", str(model_dir), "--out", str(out)]) == 2
    )
    assert [row["source"] for row in _rows(out / "failures.csv")] == ["junk.png"]


def test_usage_errors_exit_2_with_one_line(model_dir, tmp_path, capsys):
    assert main(["score", "--model", str(model_dir)]) == 2  # no input named
    missing = tmp_path / "nowhere"
    assert main(["score", "--images", str(missing), "--model", str(model_dir)]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert str(missing) in error
    not_a_model = tmp_path / "model.pt"
    not_a_model.write_text("hello")
    assert main(["score", "--images", str(tmp_path), "--model", str(not_a_model)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "model.pt" in error[0]


def test_report_rebuilds_from_the_outputs(model_dir, image_folder, tmp_path):
    out = tmp_path / "out"
    main(["score", "--images", str(image_folder), "--model", str(model_dir), "--out", str(out)])
    report = out / "report" / "index.html"
    first = report.read_text()
    report.unlink()
    assert main(["report", str(out)]) == 0
    assert report.read_text() == first
    assert main(["report", str(tmp_path / "empty")]) == 2


def test_train_dispatch_still_works(capsys):
    assert main(["train", "--set", "wgan.iterationz=3", "--no-mlflow"]) == 2
    assert "wgan.iterationz" in capsys.readouterr().err


def test_scores_with_a_model_named_by_its_mlflow_uri(
    tiny_config, tiny_demo, mlflow_uri, monkeypatch, tmp_path
):
    from pipelines.train_healthy import run_training

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    summary = run_training(tiny_config, str(tiny_demo), track=True)
    out = tmp_path / "out"
    images = tiny_demo / "dev_val" / "lesion"
    uri = f"runs:/{summary.run_id}/model"
    assert main(["score", "--images", str(images), "--model", uri, "--out", str(out)]) == 0
    recorded = json.loads((out / "summary.json").read_text())["model"]
    assert recorded["reference"] == uri and recorded["run_id"] == summary.run_id
    assert len(_rows(out / "scores.csv")) == len(list(images.glob("*.png")))


def test_report_shows_slices_of_flagged_and_top_series_only(
    model_dir, image_folder, tmp_path, monkeypatch
):
    import anogan.report.build as build

    out = tmp_path / "out"
    main(["score", "--images", str(image_folder), "--model", str(model_dir), "--out", str(out)])
    monkeypatch.setattr(build, "DETAILED_SERIES", 0)
    html = build.build_report(out).read_text()
    # One image series a file: only the flagged lesion image keeps its slice panels.
    assert html.count('alt="heatmap overlay"') == 1
    assert html.count("Slice images are shown for flagged series") == 3


def test_an_output_folder_of_an_earlier_run_is_refused(model_dir, image_folder, tmp_path, capsys):
    out = tmp_path / "out"
    arguments = ["score", "--images", str(image_folder), "--model", str(model_dir)]
    assert main([*arguments, "--out", str(out)]) == 3  # the folder holds one corrupt file
    written = sorted(path.name for path in out.iterdir())
    capsys.readouterr()

    assert main([*arguments, "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and str(out) in error[0] and "already holds" in error[0]
    assert sorted(path.name for path in out.iterdir()) == written
