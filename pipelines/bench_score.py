"""`make bench` (scoring part): slices/s of `anogan score` and peak memory on a long series.

Prints, for S synthetic 256 x 256 slices on this machine's CPU threads:
  - the bare forward throughput of the model (windows and slices per second through
    `FAnoGAN.anomaly` on full batches, nothing else): the limit to approach;
  - streaming scoring throughput (model grid, masks, windows, stitching, maps back on the
    input grid, scores.csv, the NIfTI map, previews), as slices per second;
  - the peak resident memory added while scoring one series of `--slices` slices, next to the
    size of that series' pixels and of its whole map volume (what a non-streaming scorer
    would hold on top).

    python -m pipelines.bench_score [--slices 500] [--size 256] [--grid 256] [--model PATH]
        [--set scoring.KEY=VALUE ...]

The bare forward honours `scoring.flip` (two passes a window) and `scoring.refine_steps`, so
that the limit and the scorer are measured with the same options.

Without --model the networks are the demo config's widths, untrained: throughput does not
depend on the weights. A uniform calibration is used, so every output is still written.
"""

import argparse
import logging
import resource
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from anogan.compute import Compute
from anogan.config import Config, load_config, override_config
from anogan.export import OutputWriter
from anogan.io.series import Series
from anogan.models.fanogan import FAnoGAN
from anogan.scoring.calibrate import REFERENCE_QUANTILES, Calibration
from anogan.scoring.scorer import plan_windows, window_slices
from anogan.scoring.series import SeriesScorer

logger = logging.getLogger("anogan.bench_score")

FORWARD_WARMUP = 3  # untimed batches first: oneDNN picks and caches its kernels
FORWARD_REPEATS = 10  # timed batches of the bare forward pass; median kept


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, config = _model(args)
    series = _synthetic_series(args.slices, args.size)

    windows_per_slice, batch = _windows_of(series, config)
    forward_before = _bare_forward(model, config, batch)
    peak_before = _peak_rss_mb()
    seconds = _score(model, config, series)
    peak_added = _peak_rss_mb() - peak_before
    # The limit is the faster of two measurements, before and after scoring, so that a
    # machine that warms up or gets busier does not make the scorer look better than it is.
    forward = max(forward_before, _bare_forward(model, config, batch))

    pixels_mb = series.pixels.nbytes / 2**20
    print(f"machine: {torch.get_num_threads()} CPU threads, torch {torch.__version__}")
    print(
        f"model: widths {list(config.model.channels)}, {config.data.patch_size} px windows, "
        f"slices of {args.size} px scored on a {config.data.image_size} px grid, "
        f"overlap {config.scoring.overlap}, batch {config.scoring.batch_size}, "
        f"flip {config.scoring.flip}, refine steps {config.scoring.refine_steps}"
    )
    print(f"windows per slice: {windows_per_slice:.1f}")
    print(
        f"bare forward: {forward:.0f} windows/s = {forward / windows_per_slice:.1f} slices/s "
        "(the limit)"
    )
    print(
        f"anogan score: {args.slices / seconds:.1f} slices/s "
        f"({args.slices} slices in {seconds:.1f} s, "
        f"{100 * (args.slices / seconds) / (forward / windows_per_slice):.0f}% of the limit)"
    )
    print(
        f"peak memory added while scoring the {args.slices}-slice series: {peak_added:.0f} MiB "
        f"(its pixels: {pixels_mb:.0f} MiB, held by the reader; its full map volume would be "
        f"{pixels_mb:.0f} MiB more)"
    )
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.bench_score")
    parser.add_argument("--slices", type=int, default=500)
    parser.add_argument("--size", type=int, default=256, help="input slice side in pixels")
    parser.add_argument("--grid", type=int, default=256, help="model grid (data.image_size)")
    parser.add_argument("--config", default="configs/demo.yaml")
    parser.add_argument("--model", default=None, help="a trained model.pt instead")
    parser.add_argument("--batch-size", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="scoring.KEY=VALUE")
    return parser.parse_args(argv)


def _model(args: argparse.Namespace) -> tuple[FAnoGAN, Config]:
    if args.model:
        from anogan.training.checkpoint import load_model

        trained = load_model(args.model)
        model, config = trained.model, trained.config
    else:
        config = load_config(args.config)
        model = FAnoGAN(config.model, config.data.patch_size)
    config = override_config(config, args.set, sections=("scoring",))
    config = replace(config, data=replace(config.data, image_size=args.grid))
    if args.batch_size:
        config = replace(config, scoring=replace(config.scoring, batch_size=args.batch_size))
    return model.eval(), config


def _synthetic_series(slices: int, size: int) -> Series:
    """A head-like phantom: an ellipse of noisy tissue in air, (S, size, size) float32."""
    rng = np.random.default_rng(0)
    rows, columns = np.mgrid[0:size, 0:size] / size
    body = ((rows - 0.5) / 0.4) ** 2 + ((columns - 0.5) / 0.33) ** 2 <= 1
    pixels = np.empty((slices, size, size), dtype=np.float32)
    for index in range(slices):
        pixels[index] = body * (0.5 + 0.05 * rng.standard_normal((size, size)))
    return Series(
        pixels=pixels,
        spacing=(1.0, 1.0),
        affine=np.diag([-1.0, -1.0, 1.0, 1.0]),
        series_id="bench",
        sources=("bench.nii.gz",) * slices,
        kind="nifti",
    )


def _windows_of(series: Series, config: Config) -> tuple[float, torch.Tensor]:
    """Mean windows scored per slice, and one batch of those windows, (B, 1, P, P)."""
    from anogan.data.preprocess import prepare_slices

    prepared = prepare_slices(series.pixels[:8], series.spacing, config.data)
    _, _, height, width = prepared.images.shape
    positions = window_slices(height, width, config.data.patch_size, config.scoring.overlap)
    windows, counts = [], []
    for image, mask in zip(prepared.images, prepared.masks, strict=True):
        chosen = plan_windows(mask, positions)
        counts.append(len(chosen))
        windows.extend(image[:, positions[index][0], positions[index][1]] for index in chosen)
    batch = torch.stack(windows[: config.scoring.batch_size])
    return float(np.mean(counts)), batch


def _bare_forward(model: FAnoGAN, config: Config, batch: torch.Tensor) -> float:
    """Windows per second through the model alone on one batch of the series' own windows,
    placed as the scorer places them (fp32, the configured device and memory layout)."""
    # Placed outside inference mode, as WindowStream does: refinement differentiates G.
    compute = Compute(replace(config.compute, precision="fp32"))
    model = compute.module(model)
    with torch.inference_mode():
        return _timed_forward(model, config, compute.images(batch))


def _timed_forward(model: FAnoGAN, config: Config, windows: torch.Tensor) -> float:
    masks = torch.ones_like(windows)
    scoring = config.scoring
    passes = 2 if scoring.flip else 1

    def forward() -> None:
        for _ in range(passes):
            model.anomaly(
                windows, scoring.kappa, masks, scoring.refine_steps, scoring.refine_step_size
            )

    for _ in range(FORWARD_WARMUP):
        forward()
    seconds = []
    for _ in range(FORWARD_REPEATS):
        start = time.perf_counter()
        forward()
        seconds.append(time.perf_counter() - start)
    return windows.shape[0] / float(np.median(seconds))


def _score(model: FAnoGAN, config: Config, series: Series) -> float:
    calibration = Calibration(
        threshold=float("inf"),
        target_fpr=0.05,
        observed_fpr=0.0,
        heatmap_max=1.0,
        healthy_count=1,
        healthy_quantiles=tuple(0.0 for _ in REFERENCE_QUANTILES),
    )
    with tempfile.TemporaryDirectory(prefix="anogan-bench-") as folder:
        writer = OutputWriter(Path(folder), Path(folder), 1.0, calibration.threshold)
        scorer = SeriesScorer(
            model, config.data, config.scoring, calibration, compute=config.compute
        )
        start = time.perf_counter()
        scorer.run([series], writer)
        writer.finish({})
        return time.perf_counter() - start


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


if __name__ == "__main__":
    sys.exit(main())
