"""`make bench`: training and scoring throughput, printed beside a textbook reference.

For the demo and the paper widths this measures, in one process and interleaved round by round
so that a busy machine slows every variant alike:

- WGAN-GP training: generator iterations/s (n_critic critic updates and one generator update on
  batches of 64) and training images/s (real windows the critic sees), for a straightforward
  implementation (fp32, NCHW, separate critic passes over real, fake and interpolated images)
  and for `WGANTrainer.train_step` under each compute option (precision, memory layout,
  torch.compile);
- scoring: windows/s through G(E(x)) and both critic feature passes, the same way;
- FLOPs per iteration and per scored window (torch's FlopCounterMode), and the share of the
  machine's measured peak matrix-product rate that each variant reaches.

Figures are printed, never asserted. Then the readers' and the scorer's own benchmarks run
where they exist (`pipelines.bench_io`, `pipelines.bench_score`).

    python -m pipelines.benchmark throughput [--widths demo paper] [--rounds 3]
    python -m pipelines.benchmark quality --data DIR [...]  (see pipelines.bench_quality)
"""

import argparse
import importlib.util
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from anogan.compute import Compute
from anogan.config import ComputeConfig, Config, load_config
from anogan.data.patches import PatchSampler
from anogan.models.fanogan import FAnoGAN
from anogan.training.monitor import LocalRecorder
from anogan.training.wgan import WGANTrainer, gradient_penalty

logger = logging.getLogger("anogan.benchmark")

WIDTHS = {"demo": "configs/demo.yaml", "paper": "configs/paper.yaml"}
BATCH = 64  # the published batch size, for training and scoring alike
PEAK_SIZE = 2048  # side of the square matrices of the peak matmul measurement
PEAK_CONV = (64, 256, 512, 16)  # batch, in and out channels, side: a 3x3 convolution of the
# paper widths, whose oneDNN kernels run faster than torch.mm on these CPUs
VARIANTS = {
    "fp32": ComputeConfig(device="cpu"),
    "fp32 channels-last": ComputeConfig(device="cpu", channels_last=True),
    "bf16": ComputeConfig(device="cpu", precision="bf16"),
    "bf16 channels-last": ComputeConfig(device="cpu", precision="bf16", channels_last=True),
    # torch.compile as the trainers and the scoring benchmark apply it (`compute.compile`);
    # the untimed warm-up call of `interleaved` pays the compilation.
    "fp32 compiled": ComputeConfig(device="cpu", compile=True),
    "bf16 channels-last compiled": ComputeConfig(
        device="cpu", precision="bf16", channels_last=True, compile=True
    ),
}
OTHER_BENCHMARKS = ("pipelines.bench_io", "pipelines.bench_score")


@dataclass
class Timing:
    """Seconds per call of one variant, one entry per round."""

    name: str
    seconds: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


def peak_rates(dtype: torch.dtype, repeats: int = 5) -> dict[str, float]:
    """The best FLOP/s of a square matrix product and of a 3x3 convolution in `dtype`."""
    left = torch.randn(PEAK_SIZE, PEAK_SIZE).to(dtype)
    right = torch.randn(PEAK_SIZE, PEAK_SIZE).to(dtype)
    batch, in_channels, out_channels, side = PEAK_CONV
    images = torch.randn(batch, in_channels, side, side).to(dtype)
    convolution = torch.nn.Conv2d(in_channels, out_channels, 3, padding=1).to(dtype)
    calls = {
        "matmul": (lambda: torch.mm(left, right), 2.0 * PEAK_SIZE**3),
        "conv": (
            lambda: convolution(images),
            2.0 * batch * in_channels * out_channels * 9 * side * side,
        ),
    }
    rates = {}
    with torch.inference_mode():
        for name, (call, flops) in calls.items():
            call()
            best = float("inf")
            for _ in range(repeats):
                started = time.perf_counter()
                call()
                best = min(best, time.perf_counter() - started)
            rates[name] = flops / best
    return rates


def reference_trainer(model: FAnoGAN, sampler: PatchSampler, config: Config) -> Callable[[], None]:
    """A textbook WGAN-GP iteration: fp32, NCHW, one critic pass per kind of image."""
    generator, critic = model.generator, model.critic
    generator_optimiser = torch.optim.Adam(generator.parameters(), lr=1e-4, betas=(0.0, 0.9))
    critic_optimiser = torch.optim.Adam(critic.parameters(), lr=1e-4, betas=(0.0, 0.9))

    def step() -> None:
        for _ in range(config.wgan.n_critic):
            real = sampler.sample(BATCH)
            fake = generator(torch.randn(BATCH, model.latent_dim)).detach()
            penalty = gradient_penalty(critic, real, fake)
            loss = critic(fake).mean() - critic(real).mean() + config.wgan.gp_weight * penalty
            critic_optimiser.zero_grad()
            loss.backward()
            critic_optimiser.step()
        loss = -critic(generator(torch.randn(BATCH, model.latent_dim))).mean()
        generator_optimiser.zero_grad()
        loss.backward()
        generator_optimiser.step()

    return step


def reference_score(model: FAnoGAN, images: torch.Tensor) -> torch.Tensor:
    """Textbook f-AnoGAN scores of (B, 1, H, W) windows: fp32, separate feature passes."""
    with torch.inference_mode():
        reconstruction = model.generator(model.encoder(images))
        image_residual = (images - reconstruction).square().mean(dim=(1, 2, 3))
        features = model.critic.features
        feature_residual = (features(images) - features(reconstruction)).square().mean(dim=1)
        return image_residual + feature_residual


def interleaved(calls: dict[str, Callable[[], object]], rounds: int) -> list[Timing]:
    """Time each call once per round, the variants taking turns; one warm-up call each."""
    for call in calls.values():
        call()
    timings = {name: Timing(name, []) for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            timings[name].seconds.append(time.perf_counter() - started)
    return list(timings.values())


def training_calls(config: Config, folder: Path) -> dict[str, Callable[[], object]]:
    """One generator iteration of the reference and of WGANTrainer under each variant."""
    images = torch.rand(256, 1, config.data.patch_size, config.data.patch_size) * 2 - 1
    masks = torch.ones_like(images)
    wgan = replace(config.wgan, batch_size=BATCH, diffaugment=False)
    reference_model = FAnoGAN(config.model, config.data.patch_size)
    reference_sampler = PatchSampler(images, masks, config.data.patch_size, config.seed)
    calls: dict[str, Callable[[], object]] = {
        "reference": reference_trainer(reference_model, reference_sampler, config)
    }
    for name, compute_config in VARIANTS.items():
        trainer = WGANTrainer(
            FAnoGAN(config.model, config.data.patch_size),
            PatchSampler(images, masks, config.data.patch_size, config.seed),
            wgan,
            folder,
            LocalRecorder(),
            config.seed,
            {},
            Compute(compute_config),
        )
        calls[name] = trainer.train_step
    return calls


def scoring_calls(config: Config) -> dict[str, Callable[[], object]]:
    """Scores of one batch of windows by the reference and by FAnoGAN.anomaly per variant."""
    size = config.data.patch_size
    images = torch.rand(BATCH, 1, size, size) * 2 - 1
    reference_model = FAnoGAN(config.model, size).eval()
    calls: dict[str, Callable[[], object]] = {
        "reference": lambda: reference_score(reference_model, images)
    }
    for name, compute_config in VARIANTS.items():
        compute = Compute(compute_config)
        model = FAnoGAN(config.model, size).eval()
        compute.module(model, compiled=(model.generator, model.encoder, model.critic.trunk))
        calls[name] = _scorer(model, compute, compute.images(images))
    return calls


def flops_per_iteration(config: Config) -> tuple[float, float]:
    """FLOPs of one training iteration (batch BATCH) and of scoring one window."""
    size = config.data.patch_size
    model = FAnoGAN(config.model, size)
    images = torch.rand(256, 1, size, size) * 2 - 1
    sampler = PatchSampler(images, torch.ones_like(images), size, config.seed)
    step = reference_trainer(model, sampler, config)
    with FlopCounterMode(display=False) as counter:
        step()
    training = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        reference_score(model.eval(), images[:8])
    return float(training), counter.get_total_flops() / 8.0


def report(
    title: str,
    timings: list[Timing],
    per_call: int,
    flops_per_call: float,
    peaks: dict[str, dict[str, float]],
) -> None:
    """Print one table: rates, FLOP/s as shares of the matmul and convolution peaks of the
    variant's precision, and the speed-up over the reference."""
    reference = next(timing for timing in timings if timing.name == "reference").median
    print(f"\n{title}")
    header = ("variant", "calls/s", "images/s", "GFLOP/s", "of mm", "of conv", "x ref")
    print(f"  {header[0]:<20} " + " ".join(f"{name:>9}" for name in header[1:]))
    for timing in timings:
        rate = 1.0 / timing.median
        flops = flops_per_call * rate
        peak = peaks["bf16" if timing.name.startswith("bf16") else "fp32"]
        print(
            f"  {timing.name:<20} {rate:9.3f} {rate * per_call:9.1f} {flops / 1e9:9.1f} "
            f"{flops / peak['matmul']:9.1%} {flops / peak['conv']:9.1%} "
            f"{reference / timing.median:9.2f}"
        )


def throughput(widths: list[str], rounds: int) -> None:
    """Measure and print everything of the module docstring for the named widths."""
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    peaks = {"fp32": peak_rates(torch.float32), "bf16": peak_rates(torch.bfloat16)}
    for name, rates in peaks.items():
        print(
            f"peak {name}: matmul {PEAK_SIZE}^2 {rates['matmul'] / 1e9:.0f} GFLOP/s, "
            f"3x3 conv {rates['conv'] / 1e9:.0f} GFLOP/s"
        )
    print("(each variant's shares are of the peaks of its own precision)")
    for width in widths:
        config = load_config(WIDTHS[width])
        training_flops, scoring_flops = flops_per_iteration(config)
        channels = list(config.model.channels)
        print(
            f"\n== {width} widths {channels}, latent {config.model.latent_dim}, "
            f"{config.data.patch_size} px: {training_flops / 1e9:.1f} GFLOP per training "
            f"iteration (n_critic {config.wgan.n_critic}, batch {BATCH}), "
            f"{scoring_flops / 1e6:.0f} MFLOP per scored window"
        )
        with tempfile.TemporaryDirectory() as folder:
            timings = interleaved(training_calls(config, Path(folder)), rounds)
        seen = BATCH * config.wgan.n_critic
        report("training (calls = generator iterations)", timings, seen, training_flops, peaks)
        timings = interleaved(scoring_calls(config), rounds * 3)
        report("scoring (calls = batches of 64)", timings, BATCH, scoring_flops * BATCH, peaks)


def other_benchmarks() -> None:
    """Run the readers' and the scorer's benchmarks, each in a process of its own so that
    their peak-memory figures are not this process's."""
    for name in OTHER_BENCHMARKS:
        if importlib.util.find_spec(name) is None:
            continue
        print(f"\n== {name}", flush=True)
        subprocess.run([sys.executable, "-m", name], check=True)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["quality"]:
        from pipelines.bench_quality import main as quality_main

        return quality_main(argv[1:])
    parser = argparse.ArgumentParser(prog="benchmark", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    speed = commands.add_parser("throughput", help="training and scoring throughput")
    speed.add_argument("--widths", nargs="+", choices=sorted(WIDTHS), default=["demo", "paper"])
    speed.add_argument("--rounds", type=int, default=3, help="timed calls per variant")
    speed.add_argument("--only-model", action="store_true", help="skip the io and score benches")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    throughput(args.widths, args.rounds)
    if not args.only_model:
        other_benchmarks()
    return 0


def _scorer(model: FAnoGAN, compute: Compute, images: torch.Tensor) -> Callable[[], object]:
    def call() -> torch.Tensor:
        with torch.inference_mode(), compute.autocast():
            return model.anomaly(images).score

    return call


if __name__ == "__main__":
    sys.exit(main())
