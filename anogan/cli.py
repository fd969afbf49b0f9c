"""The `anogan` command: `anogan train`, `score`, `evaluate`, `merge` and `report`.

Only this module (and the pipelines it calls) configures logging handlers. Every AnoganError
becomes one line on stderr and a non-zero exit code. `anogan score` exits 0 when every input
was scored, 3 when some failed and the rest were scored, 2 on a usage error or when nothing
could be scored. `anogan score --shard I/N` (or a torchrun rank) scores one shard of the
input into OUT/shard-I-of-N/; `anogan merge OUT` joins the shards (see anogan.scoring.shard).
"""

import argparse
import logging
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

USAGE = """usage: anogan COMMAND [options]

commands:
  train     train on healthy images, calibrate, evaluate, track in MLflow
            (anogan train --help)
  score     score DICOM, NIfTI or image inputs: scores.csv, maps, DICOM SC, HTML report
            (anogan score --help); --shard I/N scores one part of a large input
  evaluate  quality figures of a model on a labelled set, beside trivial baselines
            (anogan evaluate --model M --data DIR_OR_MANIFEST)
  merge     join the shards of a sharded score into one output (anogan merge OUT)
  report    rebuild the HTML report of a scoring output folder (anogan report DIR)
"""

EXIT_OK = 0
EXIT_USAGE = 2  # usage error, or nothing could be scored
EXIT_PARTIAL = 3  # some inputs failed, the rest were scored
LATEST_MODEL = Path("runs") / "latest"  # written by `make train-healthy` (train.output_dir)
REPORTS_DIR = Path("reports")
MODEL_URI_SCHEMES = ("runs:/", "models:/", "mlflow-artifacts:/")
RUN_OUTPUTS = ("scores.csv", "failures.csv", "summary.json", "maps", "report")  # of one run


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a sub-command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "train":
        from pipelines.train_healthy import main as train_main

        return train_main(rest)
    if command == "score":
        return score_main(rest)
    if command == "evaluate":
        return evaluate_main(rest)
    if command == "merge":
        return merge_main(rest)
    if command == "report":
        return report_main(rest)
    print(f"anogan: error: unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return 2


def score_main(argv: list[str]) -> int:
    """`anogan score`: see `anogan score --help`."""
    from anogan.errors import AnoganError

    parser = _score_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:
        return EXIT_USAGE if exit_request.code else EXIT_OK
    _configure_logging(args.verbose)
    try:
        outcome = run_score(args)
    except AnoganError as error:
        print(f"anogan score: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return _closing(outcome["counts"], outcome["report"], "anogan score", outcome["sharded"])


def evaluate_main(argv: list[str]) -> int:
    """`anogan evaluate`: see `anogan evaluate --help`."""
    from anogan.errors import AnoganError

    parser = argparse.ArgumentParser(
        prog="anogan evaluate",
        description="Image ROC AUC, average precision (overall and per subtype), sensitivity "
        "at the model's calibrated threshold and the observed false-positive rate, with "
        "bootstrap 95%% intervals, beside the trivial per-image baselines; pixel figures on "
        "synthetic lesions inserted into the set's healthy slices.",
    )
    parser.add_argument("--model", default=None, help="model.pt, its folder, or runs:/ID/model")
    parser.add_argument(
        "--data", required=True, help="a manifest CSV or a labelled folder (see the README)"
    )
    parser.add_argument("--kind", default="auto", choices=("auto", "images", "nifti", "dicom"))
    parser.add_argument("--out", default=None, help="output folder (default reports/evaluate-*)")
    parser.add_argument("--no-lesions", action="store_true", help="skip the localisation part")
    parser.add_argument("--repeats", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="fixes lesions and resamples")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="scoring.KEY=VALUE",
        help="score with a changed scoring option (for example scoring.flip=true); the "
        "calibrated threshold then no longer applies, so sensitivity and FPR are left out",
    )
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:
        return EXIT_USAGE if exit_request.code else EXIT_OK
    _configure_logging(False)
    try:
        markdown, out_dir = run_evaluate(args)
    except AnoganError as error:
        print(f"anogan evaluate: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(markdown)
    print(f"Results: {out_dir}")
    return EXIT_OK


def run_evaluate(args: argparse.Namespace) -> tuple[str, Path]:
    """Evaluate `args.model` on `args.data`; returns the markdown tables and the folder."""
    from anogan.config import config_to_dict, override_config
    from anogan.data.sources import resolve_evaluation_data
    from anogan.evaluation.evaluate import (
        describe_counts,
        evaluate_model,
        load_evaluation_sets,
        write_results,
    )
    from anogan.scoring.calibrate import Calibration

    dataset = resolve_evaluation_data(args.data, args.kind)
    out_dir = Path(args.out) if args.out else REPORTS_DIR / time.strftime("evaluate-%Y%m%d-%H%M%S")
    with ExitStack() as stack:
        trained, model_ref = _load_trained(args.model, stack)
        config = override_config(trained.config, args.set, sections=("scoring",))
        threshold: float | None = Calibration.from_dict(trained.calibration).threshold
        if args.set:
            # The threshold was calibrated on scores of the trained scoring options.
            logger.warning(
                "Scoring changed by --set %s: the calibrated threshold no longer applies, so "
                "sensitivity and the observed false-positive rate are left out",
                " ".join(args.set),
            )
            threshold = None
        sets = load_evaluation_sets(dataset.items, config, not args.no_lesions, args.seed)
        counts = sets.counts()
        logger.info("Evaluating %s on %s", model_ref, describe_counts(dataset, counts))
        figures = evaluate_model(trained.model, config, threshold, sets, args.repeats, args.seed)
    extra = {
        "model": model_ref,
        "data": str(dataset.root),
        "threshold": threshold,
        "scoring": config_to_dict(config)["scoring"],
    }
    return write_results(out_dir, figures, counts, extra), out_dir


def merge_main(argv: list[str]) -> int:
    """`anogan merge OUT [SHARD_DIR ...]`: join shard outputs into one output folder OUT."""
    from anogan.errors import AnoganError
    from anogan.scoring.shard import find_shards, merge_shards

    parser = argparse.ArgumentParser(
        prog="anogan merge",
        description="Join the outputs of anogan score --shard I/N into one output folder, "
        "the same as an unsharded run (scores.csv, failures.csv, maps/, dicom/, report/).",
    )
    parser.add_argument("out", help="the merged folder; also where shard-I-of-N/ are sought")
    parser.add_argument("shards", nargs="*", help="shard folders (default OUT/shard-*-of-*)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:
        return EXIT_USAGE if exit_request.code else EXIT_OK
    _configure_logging(False)
    out_dir = Path(args.out)
    shard_dirs = [Path(folder) for folder in args.shards] or find_shards(out_dir)
    try:
        report = merge_shards(out_dir, shard_dirs)
        counts = _counts(out_dir)
    except AnoganError as error:
        print(f"anogan merge: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return _closing(counts, report, "anogan merge", sharded=False)


def _closing(counts: dict[str, int], report: Path, command: str, sharded: bool) -> int:
    """Print the closing line of a scoring run; returns its exit code."""
    print(
        f"Scored {counts['slices']} slices in {counts['series']} series; "
        f"flagged {counts['flagged_series']} series ({counts['flagged_slices']} slices); "
        f"failed {counts['failures']} inputs; report: {report}"
    )
    # A shard may hold no series of its own; only the merged output can be judged empty.
    if counts["series"] == 0 and not sharded:
        print(f"{command}: error: nothing could be scored (see failures.csv)", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_PARTIAL if counts["failures"] else EXIT_OK


def report_main(argv: list[str]) -> int:
    """`anogan report DIR`: rebuild DIR/report/index.html from DIR's outputs."""
    from anogan.errors import AnoganError
    from anogan.report.build import build_report

    parser = argparse.ArgumentParser(prog="anogan report", description=report_main.__doc__)
    parser.add_argument("folder", help="an output folder of anogan score")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_request:
        return EXIT_USAGE if exit_request.code else EXIT_OK
    _configure_logging(False)
    try:
        path = build_report(Path(args.folder))
    except AnoganError as error:
        print(f"anogan report: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    print(f"Report: {path}")
    return EXIT_OK


def run_score(args: argparse.Namespace) -> dict[str, Any]:
    """Score the inputs named by `args` into `args.out`; returns counts and the report path.

    With a shard (`--shard I/N`, or torchrun's RANK and WORLD_SIZE), only that shard's
    items are scored, into `args.out`/shard-I-of-N.

    Raises:
        AnoganError: no usable model, a missing input, an unwritable output folder, a
            malformed shard or a shard without `--out`.
    """
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from anogan.config import save_config
    from anogan.export import OutputWriter
    from anogan.report.build import build_report
    from anogan.scoring.calibrate import Calibration
    from anogan.scoring.series import SeriesScorer
    from anogan.scoring.shard import ShardRecorder

    kind, input_path = _input_of(args)
    root = input_path if input_path.is_dir() else input_path.parent
    shard = _shard_of(args)
    out_dir = Path(args.out) if args.out else _new_report_dir()
    if shard is not None:
        out_dir = out_dir / shard.folder_name
    _check_fresh(out_dir)
    started = time.strftime("%Y-%m-%dT%H:%M:%S")

    with ExitStack() as stack:
        trained, model_ref = _load_trained(args.model, stack)
        config = trained.config
        if args.batch_size:
            config = replace(config, scoring=replace(config.scoring, batch_size=args.batch_size))
        calibration = Calibration.from_dict(trained.calibration)
        out_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, out_dir / "config.yaml")
        logger.info("Scoring %s (%s) with %s into %s", input_path, kind, model_ref, out_dir)

        writer = OutputWriter(
            out_dir, root, calibration.heatmap_max, calibration.threshold, not args.no_dicom
        )
        sink = writer if shard is None else ShardRecorder(writer, shard)
        select = None if shard is None else sink.select
        with logging_redirect_tqdm(), tqdm(desc="Scoring", unit="slice", mininterval=1) as bar:
            scorer = SeriesScorer(
                trained.model,
                config.data,
                config.scoring,
                calibration,
                progress=bar.update,
                compute=config.compute,
            )
            window = args.window or config.data.window
            results = _read(input_path, kind, window, config.data.slice_axis, root, select)
            scorer.run(results if shard is None else sink.results(results), sink)
        run = {
            "started": started,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "input": {"path": str(input_path), "kind": kind},
            "model": _model_description(trained, model_ref),
            "calibration": calibration.to_dict(),
            "scoring": asdict(config.scoring),
            "window_size": config.data.patch_size,
            "grid_size": config.data.image_size,
        }
        if shard is not None:
            run["shard"] = sink.record()
        summary_path = writer.finish(run)
    report = build_report(out_dir)
    logger.info("Outputs in %s (summary %s)", out_dir, summary_path.name)
    return {"counts": _counts(out_dir), "report": report, "sharded": shard is not None}


def _check_fresh(out_dir: Path) -> None:
    """Refuse an output folder that already holds a scoring run: its files would mix."""
    from anogan.errors import DataError

    earlier = [name for name in RUN_OUTPUTS if (out_dir / name).exists()]
    if earlier:
        raise DataError(
            f"--out {out_dir} already holds the outputs of a scoring run ({', '.join(earlier)}); "
            "pass a new --out or remove that folder"
        )


def _score_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="anogan score",
        description="Score DICOM, NIfTI or image inputs with a trained model: scores.csv, "
        "failures.csv, maps/, dicom/ (Secondary Capture of flagged series), report/.",
    )
    inputs = parser.add_mutually_exclusive_group(required=True)
    inputs.add_argument("--dicom", metavar="DIR", help="a folder of DICOM files (any depth)")
    inputs.add_argument("--nifti", metavar="PATH", help="a NIfTI file or a folder of them")
    inputs.add_argument("--images", metavar="DIR", help="a folder of PNG, JPEG or TIFF slices")
    parser.add_argument(
        "--model",
        default=None,
        help="model.pt, its folder, or an MLflow URI runs:/<id>/model "
        f"(default: the model named in {LATEST_MODEL}, the newest of make train-healthy)",
    )
    parser.add_argument("--out", default=None, help="output folder (default reports/<time>/)")
    parser.add_argument("--window", default=None, help="DICOM window preset (default: model's)")
    parser.add_argument("--batch-size", type=int, default=0, help="windows per forward pass")
    parser.add_argument("--no-dicom", action="store_true", help="write no Secondary Capture")
    parser.add_argument(
        "--shard",
        metavar="I/N",
        default=None,
        help="score only shard I of N (0-based) into OUT/shard-I-of-N, then run anogan merge "
        "OUT; needs --out (default under torchrun: RANK/WORLD_SIZE)",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def _configure_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    for noisy in ("monai", "matplotlib", "PIL", "highdicom", "pydicom"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _input_of(args: argparse.Namespace) -> tuple[str, Path]:
    from anogan.errors import DataError

    kind, value = next(
        (name, getattr(args, name)) for name in ("dicom", "nifti", "images") if getattr(args, name)
    )
    path = Path(value)
    if not path.exists():
        raise DataError(f"--{kind} {path}: no such file or folder")
    if kind in ("dicom", "images") and not path.is_dir():
        raise DataError(f"--{kind} {path}: expected a folder")
    return ("image" if kind == "images" else kind), path


def _shard_of(args: argparse.Namespace) -> Any:
    """The ShardSpec of `--shard`, else of a torchrun rank, else None."""
    from anogan.scoring.shard import ShardError, ShardSpec

    shard = ShardSpec.parse(args.shard) if args.shard else ShardSpec.from_environment(os.environ)
    if shard is not None and not args.out:
        raise ShardError(
            f"shard {shard.index}/{shard.count}: no --out; every shard must write under the "
            "same --out folder for anogan merge"
        )
    if shard is not None and not args.shard and "LOCAL_RANK" in os.environ:
        _use_local_device(int(os.environ["LOCAL_RANK"]))
    return shard


def _use_local_device(local_rank: int) -> None:
    """Under torchrun, put each rank on its own GPU of the node (a no-op without CUDA)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())


def _read(
    path: Path,
    kind: str,
    window: str | None,
    slice_axis: str,
    root: Path,
    select: Callable[[str], bool] | None = None,
) -> Iterator:
    from anogan.io import iter_series

    yield from iter_series(
        path, kind, window=window, slice_axis=slice_axis, root=root, select=select
    )


def _load_trained(model: str | None, stack: ExitStack) -> tuple[Any, str]:
    """The trained model and how it was named (path or URI)."""
    from anogan.errors import CheckpointError
    from anogan.training.checkpoint import load_model

    if model is None:
        if not LATEST_MODEL.is_file():
            raise CheckpointError(
                f"{LATEST_MODEL}: no trained model; run make train-healthy or pass --model"
            )
        model = LATEST_MODEL.read_text().strip()
        logger.info("Using the latest model of make train-healthy: %s", model)
    if model.startswith(MODEL_URI_SCHEMES):
        from anogan.tracking import download_model

        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="anogan-model-")))
        return load_model(download_model(model, folder)), model
    return load_model(Path(model)), model


def _model_description(trained: Any, model_ref: str) -> dict[str, Any]:
    info = trained.info
    metrics = info.get("metrics", {})
    return {
        "reference": model_ref,
        "path": str(trained.path),
        "sha256": info.get("sha256", ""),
        "data": info.get("data", ""),
        "run_id": info.get("run_id"),
        "trained_at": info.get("trained_at", ""),
        "metrics": {
            name: metrics[name]
            for name in ("roc_auc", "average_precision", "sensitivity", "specificity")
            if name in metrics
        },
    }


def _counts(out_dir: Path) -> dict[str, int]:
    from anogan.export import read_summary

    return read_summary(out_dir)["counts"]


def _new_report_dir() -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path, suffix = REPORTS_DIR / stamp, 1
    while path.exists():
        path, suffix = REPORTS_DIR / f"{stamp}-{suffix}", suffix + 1
    return path


if __name__ == "__main__":
    sys.exit(main())
