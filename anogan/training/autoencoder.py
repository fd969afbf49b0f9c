"""Training of the autoencoder baseline on the windows the GAN trains on, for a time budget.

Adam on the mean squared reconstruction error of healthy windows, in the configured precision
and memory layout, until `max_minutes` have passed or `iterations` steps are done. There is no
checkpointing: the baseline is retrained by each benchmark run.
"""

import logging
import time
from dataclasses import dataclass

import torch
from tqdm import tqdm

from anogan.compute import Compute
from anogan.config import ComputeConfig
from anogan.data.patches import PatchSampler
from anogan.models.autoencoder import AutoEncoder
from anogan.training.monitor import RunRecorder

logger = logging.getLogger(__name__)

LOG_EVERY = 10  # steps between loss records
BETAS = (0.5, 0.999)


@dataclass(frozen=True)
class AutoencoderResult:
    """How training ended."""

    steps: int
    final_loss: float
    minutes: float


def train_autoencoder(
    model: AutoEncoder,
    sampler: PatchSampler,
    compute_config: ComputeConfig,
    batch_size: int,
    lr: float,
    max_minutes: float,
    iterations: int = 10**9,
    recorder: RunRecorder | None = None,
    prefix: str = "autoencoder",
) -> AutoencoderResult:
    """Train `model` in place; returns when the budget or the step count runs out.

    Args:
        model: the autoencoder, moved to the compute device here.
        sampler: healthy training windows.
        compute_config: device, precision, layout.
        batch_size: windows per step.
        lr: Adam learning rate.
        max_minutes: wall-clock budget (0: no limit, then `iterations` must be finite).
        iterations: most steps.
        recorder: where the loss goes, as `prefix/loss`.
        prefix: metric name prefix.
    """
    if max_minutes <= 0 and iterations >= 10**9:
        raise ValueError("train_autoencoder needs a time budget or a step count")
    compute = Compute(compute_config)
    compute.module(model.train())
    optimiser = torch.optim.Adam(model.parameters(), lr=lr, betas=BETAS)
    start = time.monotonic()
    deadline = start + 60.0 * max_minutes if max_minutes > 0 else float("inf")
    loss_value, step = float("nan"), 0
    progress = tqdm(total=iterations if iterations < 10**9 else None, desc="Autoencoder")
    while step < iterations and time.monotonic() < deadline:
        images = compute.images(sampler.sample(batch_size))
        with compute.autocast():
            reconstruction = model(images)
        loss = (images - reconstruction.float()).square().mean()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        step += 1
        progress.update(1)
        if step % LOG_EVERY == 0:
            loss_value = float(loss.item())
            progress.set_postfix(loss=f"{loss_value:.4f}")
            if recorder is not None:
                recorder.log_metrics({f"{prefix}/loss": loss_value}, step)
    progress.close()
    model.eval()
    minutes = (time.monotonic() - start) / 60.0
    logger.info("Autoencoder: %d steps in %.1f min, loss %.4f", step, minutes, loss_value)
    return AutoencoderResult(step, loss_value, minutes)
