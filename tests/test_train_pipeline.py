"""The whole `make train-healthy` pipeline on a tiny demo set, tracked in a real MLflow store."""

import json
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

from mlflow.tracking import MlflowClient

from anogan.config import save_config
from anogan.scoring.scorer import score_slices
from anogan.tracking import download_model
from anogan.training.checkpoint import load_checkpoint, load_model
from pipelines.train_healthy import RUN_STATE, main, run_training


def test_pipeline_tracks_params_metrics_artifacts_and_model(
    tiny_config, tiny_demo, mlflow_uri, monkeypatch, tmp_path
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    summary = run_training(tiny_config, str(tiny_demo), track=True)

    for name in ("roc_auc", "average_precision", "sensitivity", "specificity", "pixel_roc_auc"):
        assert 0.0 <= summary.metrics[name] <= 1.0, name
    assert set(summary.baselines) == {"std", "mean", "p99"}

    client = MlflowClient(tracking_uri=mlflow_uri)
    run = client.get_run(summary.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["wgan.n_critic"] == "2"
    assert run.data.params["model.channels"] == "[8, 16, 32, 64]"
    assert "roc_auc" in run.data.metrics and "baseline_std/roc_auc" in run.data.metrics
    history = client.get_metric_history(summary.run_id, "wgan/critic_loss")
    assert len(history) >= 1
    artifacts = {item.path for item in client.list_artifacts(summary.run_id)}
    assert {"model", "samples", "curves", "config.yaml"} <= artifacts
    samples = client.list_artifacts(summary.run_id, "samples")
    assert any(item.path.endswith(".png") for item in samples)

    folder = download_model(f"runs:/{summary.run_id}/model", tmp_path / "downloaded")
    loaded = load_model(folder)
    local = load_model(summary.model_path)
    images = local.model.generator(
        local.model.encoder(local.model.generator(__import__("torch").randn(2, 16)))
    ).detach()
    masks = images > -0.99
    assert (
        score_slices(loaded.model, images, masks.float(), loaded.config.scoring).score.tolist()
        == score_slices(local.model, images, masks.float(), local.config.scoring).score.tolist()
    )
    assert loaded.calibration["threshold"] == summary.metrics["threshold"]
    # the healthy reference: one latent and two score terms for each training window (at most
    # 4096), taken with the run's masking
    reference = loaded.model.reference
    assert 0 < len(reference) <= 4096
    assert reference.latents.shape == (len(reference), 16)
    assert reference.image_residual.shape == reference.feature_residual.shape == (len(reference), 2)
    assert (reference.image_residual >= 0).all() and reference.masked == tiny_config.scoring.masked


def test_resume_finishes_an_interrupted_run(tiny_config, tiny_demo, tmp_path):
    first = replace(tiny_config, encoder=replace(tiny_config.encoder, iterations=0))
    summary = run_training(first, str(tiny_demo), track=False)
    resumed = run_training(tiny_config, None, resume_dir=summary.run_dir, track=False)
    assert resumed.run_dir == summary.run_dir
    assert load_model(resumed.model_path).config.encoder.iterations == 6


def test_cli_reports_a_bad_config_key_in_one_line(capsys):
    assert main(["--set", "wgan.iterationz=3", "--no-mlflow"]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "wgan.iterationz" in error[0]


def test_sigterm_stops_training_with_one_line_saying_how_to_resume(
    tiny_config, tiny_demo, mlflow_uri, monkeypatch, tmp_path, capsys
):
    # SIGTERM is how torchrun ends the other ranks when one fails, and how batch schedulers
    # end a job at its time limit. max_minutes bounds the run should the signal never come.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    wgan = replace(tiny_config.wgan, iterations=100000, sample_every=0, quality_every=0)
    config = replace(tiny_config, wgan=replace(wgan, max_minutes=3.0))
    save_config(config, tmp_path / "config.yaml")
    runs = Path(config.output_dir)
    handler = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=_terminate_after_a_checkpoint, args=(runs,), daemon=True).start()

    assert main(["--config", str(tmp_path / "config.yaml"), "--data", str(tiny_demo)]) == 2
    error = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    run_dir = next(runs.glob("2*"))
    assert error == [
        f"anogan train: error: training stopped by SIGTERM; the run in {run_dir} resumes from "
        f"its last checkpoint with `--resume {run_dir}` added to the same command"
    ]
    run_id = json.loads((run_dir / RUN_STATE).read_text())["run_id"]
    assert MlflowClient(tracking_uri=mlflow_uri).get_run(run_id).info.status == "KILLED"
    assert not (run_dir / "model").exists()

    step = int(load_checkpoint(run_dir / "checkpoints" / "wgan-last.pt")["wgan"]["step"])
    resume = ["--resume", str(run_dir), "--no-mlflow", "--set", f"wgan.iterations={step + 2}"]
    assert main(resume) == 0
    assert load_model(run_dir / "model").config.wgan.iterations == step + 2
    assert signal.getsignal(signal.SIGTERM) is handler  # the run's handler did not outlive it


def _terminate_after_a_checkpoint(runs: Path) -> None:
    deadline = time.monotonic() + 120.0
    while time.monotonic() < deadline:
        if next(runs.glob("2*/checkpoints/wgan-last.pt"), None) is not None:
            os.kill(os.getpid(), signal.SIGTERM)
            return
        time.sleep(0.01)
