"""`make train-healthy`: train on healthy images, calibrate, evaluate, track in MLflow.

Stages, each resumable: read data -> WGAN-GP -> izi_f encoder -> score the validation split ->
threshold at the target false-positive rate on its healthy slices -> metrics and curves beside
the trivial baselines -> model file, logged to MLflow as `runs:/<run id>/model`.

    python -m pipelines.train_healthy [--config configs/demo.yaml] [--data PATH] [--set k=v]
    python -m pipelines.train_healthy --resume [RUN_DIR]
    torchrun --nproc-per-node N -m pipelines.train_healthy ...   # the same, on N processes

Under torchrun both training stages run on every rank with DistributedDataParallel (see
`anogan.distributed`); rank 0 alone creates the run folder, writes run.json, checkpoints,
grids and the model, logs to MLflow, and scores, calibrates and evaluates at the end.
"""

import argparse
import json
import logging
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from anogan import distributed
from anogan.compute import Compute
from anogan.config import Config, config_to_dict, flatten_config, load_config, save_config
from anogan.data.balance import sampling_weights
from anogan.data.dataset import SliceSet, load_slices
from anogan.data.demo import build_demo
from anogan.data.patches import PatchSampler
from anogan.data.sources import DataSet, resolve_data
from anogan.errors import AnoganError, DataError, TrainingStoppedError
from anogan.evaluation.metrics import (
    baseline_metrics,
    contrast_correlation,
    image_metrics,
    pixel_metrics,
)
from anogan.evaluation.plots import plot_curves
from anogan.models.fanogan import FAnoGAN
from anogan.scoring.calibrate import calibrate
from anogan.scoring.scorer import build_reference, score_slices
from anogan.training.checkpoint import MODEL_FILE, save_model
from anogan.training.encoder import EncoderTrainer
from anogan.training.monitor import LocalRecorder, RunRecorder
from anogan.training.wgan import WGANTrainer

logger = logging.getLogger("anogan.train")

RUN_STATE = "run.json"  # per run folder: MLflow run id, data, finished stages
LATEST = "latest"  # file in the output folder naming the newest finished model


@dataclass
class TrainingSummary:
    """What a finished run tells the user."""

    run_dir: Path
    model_path: Path
    run_id: str | None
    metrics: dict[str, float]
    baselines: dict[str, dict[str, float]] = field(default_factory=dict)


def run_training(
    config: Config,
    data: str | None,
    kind: str = "auto",
    resume_dir: Path | None = None,
    track: bool = True,
) -> TrainingSummary:
    """Train, calibrate, evaluate and save one model; see the module docstring.

    Under torchrun this joins the process group first and leaves it at the end; every rank
    returns the summary, only rank 0's carries metrics.
    """
    compute = Compute(config.compute)
    ranks = distributed.setup(compute.device)
    if ranks.enabled and compute.device.type == "cuda":
        compute.device = torch.device("cuda", ranks.local_rank)
    try:
        return _run_ranked(config, data, kind, resume_dir, track, compute)
    finally:
        distributed.cleanup()


def _run_ranked(
    config: Config,
    data: str | None,
    kind: str,
    resume_dir: Path | None,
    track: bool,
    compute: Compute,
) -> TrainingSummary:
    torch.manual_seed(config.seed)
    np.random.seed(config.seed)
    main = distributed.is_main()
    run_dir = distributed.broadcast_object(
        (resume_dir or _new_run_dir(Path(config.output_dir))) if main else None
    )
    state = distributed.broadcast_object(_read_state(run_dir) if main else None)
    data, kind = data or state.get("data"), state.get("kind", kind)
    dataset = _dataset(config, data, kind)
    state.update({"data": str(dataset.root) if data else None, "kind": kind})

    recorder: RunRecorder = LocalRecorder()
    if main:
        save_config(config, run_dir / "config.yaml")
    if track and main:
        from anogan.tracking import MlflowRecorder  # mlflow only loads when tracking

        recorder = MlflowRecorder(config.tracking, run_dir.name, state.get("run_id"))
        state["run_id"] = recorder.run_id
        if "run_id" not in state.get("logged", []):
            recorder.log_params(flatten_config(config))
            recorder.set_tags({"data": dataset.description, "run_dir": str(run_dir)})
            state["logged"] = ["run_id"]
        recorder.log_artifact(run_dir / "config.yaml")
    _write_state(run_dir, state)

    try:
        with distributed.sigterm_raises():
            summary = _stages(config, dataset, run_dir, state, recorder, compute)
    except BaseException as error:
        stopped = isinstance(error, (KeyboardInterrupt, distributed.TerminatedError))
        if track and main:
            recorder.finish("KILLED" if stopped else "FAILED")
        if isinstance(error, distributed.TerminatedError) or distributed.lost_peer(error):
            raise TrainingStoppedError(_stopped_message(error, run_dir)) from error
        raise
    if track and main:
        recorder.finish()
    return summary


def _stopped_message(error: BaseException, run_dir: Path) -> str:
    """One line: which rank stopped, why, and the command that resumes the run."""
    rank, world = distributed.rank(), distributed.world_size()
    who = f"rank {rank} of {world}" if world > 1 else "training"
    if isinstance(error, distributed.TerminatedError):
        why = f"{who} stopped by {error}"
        if world > 1:
            why += " (torchrun ends the other ranks so when one fails; its report names it)"
    else:
        # gloo's message opens with its source location: "[.../pair.cc:553] Connection closed"
        reason = re.sub(r"^\[[^\]]*\]\s*", "", str(error).strip())
        reason = reason.splitlines()[0].split(". ")[0][:160] if reason else "no detail"
        why = f"{who} lost contact with another rank ({reason})"
    return (
        f"{why}; the run in {run_dir} resumes from its last checkpoint with "
        f"`--resume {run_dir}` added to the same command"
    )


def _stages(
    config: Config,
    dataset: DataSet,
    run_dir: Path,
    state: dict,
    recorder: RunRecorder,
    compute: Compute,
) -> TrainingSummary:
    limit = config.data.max_images
    train = load_slices(dataset.train, config.data, "training slices", drop_empty=True, limit=limit)
    validation = load_slices(dataset.validation, config.data, "validation slices")
    logger.info(
        "Read %d training slices and %d validation slices (%d anomalous)",
        len(train),
        len(validation),
        int(validation.labels.sum()),
    )
    weights = sampling_weights(train.images, config.data.sampling)
    sampler = PatchSampler(train.images, train.masks, config.data.patch_size, config.seed, weights)
    model = FAnoGAN(config.model, config.data.patch_size)
    world = distributed.world_size()
    logger.info("Training on %s%s", compute.describe(), f" x {world} ranks" if world > 1 else "")
    extra = {"config": config_to_dict(config)}
    resuming = "started" in state

    wgan = WGANTrainer(model, sampler, config.wgan, run_dir, recorder, config.seed, extra, compute)
    if resuming and wgan.last_path.is_file():
        wgan.resume()
    state["started"] = True
    _write_state(run_dir, state)
    if not state.get("wgan_done"):
        result = wgan.train()
        logger.info(
            "WGAN-GP done: %d steps in %.1f min, best SWD %.2f at step %d",
            result.steps,
            result.minutes,
            result.best_swd,
            result.best_step,
        )
        state["wgan_done"] = True
        _write_state(run_dir, state)
    wgan.load_best()

    encoder = EncoderTrainer(
        model, sampler, config.encoder, run_dir, recorder, config.seed, extra, compute
    )
    if resuming and encoder.last_path.is_file():
        encoder.resume()
    encoder_result = encoder.train(sample_every=config.wgan.sample_every)
    logger.info(
        "izi_f done: %d steps in %.1f min, loss %.4f",
        encoder_result.steps,
        encoder_result.minutes,
        encoder_result.final_loss,
    )
    if not distributed.is_main():
        return TrainingSummary(run_dir, run_dir / "model" / MODEL_FILE, state.get("run_id"), {})
    model.reference = build_reference(
        model, train.images, train.masks, config.scoring, config.compute, config.seed
    )
    return _evaluate_and_save(config, model, dataset, validation, run_dir, state, recorder)


def _evaluate_and_save(
    config: Config,
    model: FAnoGAN,
    dataset: DataSet,
    validation: SliceSet,
    run_dir: Path,
    state: dict,
    recorder: RunRecorder,
) -> TrainingSummary:
    # Scored as `anogan score` will score: fp32 on the compute device (see WindowStream).
    scores = score_slices(
        model, validation.images, validation.masks, config.scoring, config.compute
    )
    healthy = validation.labels == 0
    if not healthy.any():
        raise DataError(f"{dataset.description}: no healthy validation slice to calibrate on")
    calibration = calibrate(
        scores.score[healthy],
        scores.pixel_maps[healthy],
        validation.masks[healthy],
        config.scoring.target_fpr,
    )
    metrics, baselines = _metrics(config, scores, validation, calibration.threshold, run_dir)
    recorder.log_metrics(metrics, step=0)
    for name, values in baselines.items():
        recorder.log_metrics({f"baseline_{name}/{key}": v for key, v in values.items()}, step=0)

    model_dir = run_dir / "model"
    info = {
        "data": dataset.description,
        "run_id": state.get("run_id"),
        "metrics": metrics,
        "baselines": baselines,
        "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    digest = save_model(model, config, calibration.to_dict(), info, model_dir / MODEL_FILE)
    save_config(config, model_dir / "config.yaml")
    (model_dir / "metrics.json").write_text(json.dumps({**info, "sha256": digest}, indent=2))
    recorder.log_artifacts(model_dir, "model")
    for curve in ("roc.png", "pr.png"):
        if (run_dir / "curves" / curve).is_file():
            recorder.log_artifact(run_dir / "curves" / curve, "curves")
    (Path(config.output_dir) / LATEST).write_text(str(model_dir.resolve()) + "\n")
    return TrainingSummary(run_dir, model_dir / MODEL_FILE, state.get("run_id"), metrics, baselines)


def _metrics(
    config: Config, scores: Any, validation: SliceSet, threshold: float, run_dir: Path
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    labels = validation.labels.numpy()
    score = scores.score.numpy()
    metrics = image_metrics(score, labels, threshold, config.scoring.target_fpr, config.seed)
    metrics["threshold"] = threshold
    healthy = labels == 0
    metrics["contrast_spearman"] = contrast_correlation(
        score[healthy], validation.raw_statistics["std"][healthy]
    )
    baselines = baseline_metrics(validation.raw_statistics, labels)
    if baselines:
        signs = {name: values["sign"] for name, values in baselines.items()}
        plot_curves(score, labels, validation.raw_statistics, signs, run_dir / "curves")
    if validation.lesion_masks is not None:
        known = validation.has_lesion_mask | (validation.labels == 0)
        metrics.update(
            pixel_metrics(
                scores.pixel_maps[known].numpy(),
                validation.lesion_masks[known].numpy(),
                validation.masks[known].numpy(),
                config.seed,
            )
        )
    return metrics, baselines


def _dataset(config: Config, data: str | None, kind: str) -> DataSet:
    if data is None:
        data = str(_build_demo_once(Path(config.output_dir) / "demo-data"))
    return resolve_data(data, kind, config.data.validation_fraction, config.seed)


def _build_demo_once(root: Path) -> Path:
    """The demo set, built by rank 0, then by the first rank of any node that does not share
    rank 0's disk, before the other ranks read it (a plain run just builds it)."""
    ranks = distributed.ranks_from_environment()
    if ranks.rank == 0:
        build_demo(root)
    distributed.barrier()
    if ranks.rank != 0 and ranks.local_rank == 0:
        build_demo(root)  # finds rank 0's set where the disk is shared
    distributed.barrier()
    return root


def _new_run_dir(output_dir: Path) -> Path:
    run_dir = output_dir / time.strftime("%Y%m%d-%H%M%S")
    suffix = 1
    while run_dir.exists():
        run_dir = output_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-{suffix}"
        suffix += 1
    run_dir.mkdir(parents=True)
    return run_dir


def _read_state(run_dir: Path) -> dict:
    path = run_dir / RUN_STATE
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_state(run_dir: Path, state: dict) -> None:
    if distributed.is_main():
        (run_dir / RUN_STATE).write_text(json.dumps(state, indent=2))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="anogan train", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="YAML config (default: configs/demo.yaml)")
    parser.add_argument("--data", default=None, help="folder, manifest CSV; default: demo set")
    parser.add_argument("--dicom", default=None, help="train on a DICOM folder")
    parser.add_argument("--nifti", default=None, help="train on NIfTI volumes")
    parser.add_argument("--images", default=None, help="train on a folder of images")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--resume", nargs="?", const=LATEST, default=None, metavar="RUN_DIR")
    parser.add_argument("--no-mlflow", action="store_true", help="do not track in MLflow")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry; returns the process exit code."""
    args = parse_args(argv)
    # Under torchrun the other ranks say only what goes wrong; rank 0 tells the story.
    first = distributed.ranks_from_environment().rank == 0
    level = logging.INFO if first else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(message)s")
    try:
        summary = _run_from_args(args)
    except AnoganError as error:
        print(f"anogan train: error: {error}", file=sys.stderr)
        return 2
    if first:
        _print_summary(summary)
    return 0


def _run_from_args(args: argparse.Namespace) -> TrainingSummary:
    data, kind = args.data, "auto"
    for name in ("dicom", "nifti", "images"):
        if getattr(args, name):
            data, kind = getattr(args, name), name
    resume_dir = None
    if args.resume is not None:
        resume_dir = _resume_dir(args.resume, args.config)
        config = load_config(resume_dir / "config.yaml", args.set)
    else:
        config = load_config(args.config or "configs/demo.yaml", args.set)
    return run_training(config, data, kind, resume_dir, track=not args.no_mlflow)


def _resume_dir(value: str, config_path: str | None) -> Path:
    if value != LATEST:
        path = Path(value)
    else:
        output_dir = Path(load_config(config_path or "configs/demo.yaml").output_dir)
        runs = sorted(p for p in output_dir.glob("2*") if (p / RUN_STATE).is_file())
        if not runs:
            raise DataError(f"--resume: no run folder in {output_dir} to resume")
        path = runs[-1]
    if not (path / RUN_STATE).is_file():
        raise DataError(f"--resume: {path} is not a run folder (no {RUN_STATE})")
    return path


def _print_summary(summary: TrainingSummary) -> None:
    lines = [f"Model: {summary.model_path}"]
    if summary.run_id:
        lines.append(
            f"MLflow run: {summary.run_id} (load with --model runs:/{summary.run_id}/model)"
        )
    for name in ("roc_auc", "average_precision", "sensitivity", "specificity", "pixel_roc_auc"):
        if name in summary.metrics:
            lines.append(f"  {name}: {summary.metrics[name]:.3f}")
    for name, values in summary.baselines.items():
        lines.append(f"  baseline pixel {name}: roc_auc {values['roc_auc']:.3f}")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
