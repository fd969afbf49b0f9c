"""izi_f encoder training: learn E so that G(E(x)) reproduces healthy windows.

Schlegl et al., "f-AnoGAN" (Medical Image Analysis 54, 2019), section 2.3: with the generator
and critic frozen, minimise

    L(x) = mean((x - G(E(x)))^2) + kappa * mean((f(x) - f(G(E(x))))^2)

over healthy windows x, f the critic's last feature map, with RMSProp.

Under torchrun (see `anogan.distributed`) the loss is computed by an `IzifObjective` wrapped
in DistributedDataParallel, which averages the encoder's gradients over the ranks;
`batch_size` is the global batch. The frozen generator runs in eval mode, so its batch norm
needs no communication. Rank 0 alone writes grids and checkpoints.
"""

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from anogan import distributed
from anogan.compute import Compute
from anogan.config import ComputeConfig, EncoderConfig
from anogan.data.patches import PatchSampler
from anogan.models.fanogan import FAnoGAN, anomaly_from_reconstruction
from anogan.training.checkpoint import (
    load_checkpoint,
    random_state,
    restore_random_state,
    save_checkpoint,
)
from anogan.training.monitor import RunRecorder, progress_bar, save_grid

logger = logging.getLogger(__name__)

LOG_EVERY = 10  # encoder steps between loss records
GRID_SAMPLES = 32  # windows shown beside their reconstructions in each grid


@dataclass(frozen=True)
class EncoderResult:
    """How the encoder stage ended."""

    steps: int
    final_loss: float
    minutes: float
    stopped_by_time: bool


def izif_loss(
    model: FAnoGAN, images: torch.Tensor, kappa: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The izi_f loss of a batch: the batch mean of the f-AnoGAN anomaly score.

    Args:
        model: the triple; gradients flow to whichever parts require them.
        images: (B, 1, H, W) in [-1, 1].
        kappa: weight of the feature residual.

    Returns:
        (loss, image_mse, feature_mse), scalars.
    """
    output = anomaly_from_reconstruction(
        images, model.reconstruct(images), model.critic.features, kappa
    )
    return output.score.mean(), output.image_residual.mean(), output.feature_residual.mean()


class IzifObjective(nn.Module):
    """The izi_f loss as a module, so that DistributedDataParallel can wrap the encoder's part.

    Args:
        model: the triple; only the parameters that require gradients (the encoder's, once the
            generator and critic are frozen) are trained through it.
        kappa: weight of the feature residual.
    """

    def __init__(self, model: FAnoGAN, kappa: float) -> None:
        super().__init__()
        self.model, self.kappa = model, kappa

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Args: images: (B, 1, H, W) in [-1, 1]. Returns: (loss, image_mse, feature_mse)."""
        return izif_loss(self.model, images, self.kappa)


class EncoderTrainer:
    """Trains `model.encoder` against the frozen generator and critic.

    Args:
        model: the triple, generator and critic already trained.
        sampler: healthy training windows.
        config: the encoder section of the run config.
        run_dir: where grids and checkpoints go.
        recorder: receives losses and grids.
        seed: the run seed, kept with the stage; the grid windows are the first windows the
            (seeded) sampler draws, so they are the same in every run of one config.
        extra: plain values stored in every checkpoint (the resolved config).
        compute: device, precision and memory layout; the model is moved there. Default: CPU,
            fp32.
    """

    def __init__(
        self,
        model: FAnoGAN,
        sampler: PatchSampler,
        config: EncoderConfig,
        run_dir: Path,
        recorder: RunRecorder,
        seed: int,
        extra: dict[str, Any],
        compute: Compute | None = None,
    ) -> None:
        self.model, self.sampler, self.config = model, sampler, config
        self.compute = compute or Compute(ComputeConfig(device="cpu"))
        self.compute.module(model, compiled=(model.generator, model.encoder, model.critic.trunk))
        self.run_dir, self.recorder, self.extra = Path(run_dir), recorder, extra
        self.optimiser = torch.optim.RMSprop(model.encoder.parameters(), lr=config.lr)
        self.local_batch = distributed.local_batch(config.batch_size, "encoder.batch_size")
        self.batches = distributed.ShardedSampler(sampler)
        self.step = 0
        self.minutes_before = 0.0
        self._started: float | None = None
        self.grid_images = sampler.sample(GRID_SAMPLES)  # drawn by every rank, shown by rank 0

    @property
    def last_path(self) -> Path:
        return self.run_dir / "checkpoints" / "encoder-last.pt"

    def train(self, sample_every: int) -> EncoderResult:
        """Run until `config.iterations` steps or `config.max_minutes` are done.

        Args:
            sample_every: steps between grids of windows and their reconstructions.
        """
        config, model, main = self.config, self.model, distributed.is_main()
        model.generator.eval().requires_grad_(False)
        model.critic.eval().requires_grad_(False)
        objective = distributed.data_parallel(
            IzifObjective(model, config.kappa), self.compute.device
        )
        self._started = time.monotonic()
        stopped_by_time, loss = False, torch.tensor(float("nan"))
        with progress_bar(config.iterations, self.step, "izi_f") as progress:
            while self.step < config.iterations:
                model.encoder.train()
                images = self.compute.images(self.batches.sample(config.batch_size))
                with self.compute.autocast():
                    loss, image_mse, feature_mse = objective(images)
                self.optimiser.zero_grad(set_to_none=True)
                loss.backward()
                self.optimiser.step()
                self.step += 1
                progress.update(1)
                if self.step % LOG_EVERY == 0 or self.step == config.iterations:
                    metrics = distributed.mean_over_ranks(
                        {
                            "encoder/loss": loss.item(),
                            "encoder/image_mse": image_mse.item(),
                            "encoder/feature_mse": feature_mse.item(),
                        }
                    )
                    if main:
                        self.recorder.log_metrics(metrics, self.step)
                    progress.set_postfix(loss=f"{metrics['encoder/loss']:.4f}", refresh=False)
                self._milestones(sample_every)
                if config.max_minutes and distributed.broadcast_flag(
                    self._minutes() >= config.max_minutes
                ):
                    stopped_by_time = True
                    logger.info("izi_f stopped by its %.1f minute budget", config.max_minutes)
                    break

        self._save_grid()
        self._save()
        distributed.barrier()
        model.generator.requires_grad_(True)
        model.critic.requires_grad_(True)
        final_loss = distributed.mean_over_ranks({"loss": float(loss.item())})["loss"]
        return EncoderResult(self.step, final_loss, self._minutes(), stopped_by_time)

    def resume(self, path: Path | None = None) -> None:
        """Restore encoder, optimiser, step and random state from a checkpoint."""
        state = load_checkpoint(path or self.last_path)["encoder_stage"]
        self.model.encoder.load_state_dict(state["encoder"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.step, self.minutes_before = int(state["step"]), float(state["minutes"])
        restore_random_state(state["random"])
        self.sampler.load_state(state["sampler"])
        logger.info("Resumed izi_f at step %d", self.step)

    def _milestones(self, sample_every: int) -> None:
        if sample_every and self.step % sample_every == 0:
            self._save_grid()
        if self.config.checkpoint_every and self.step % self.config.checkpoint_every == 0:
            self._save()

    @torch.no_grad()
    def _save_grid(self) -> None:
        if not distributed.is_main():
            return
        self.model.encoder.eval()
        with self.compute.autocast():
            reconstruction = self.model.reconstruct(self.compute.images(self.grid_images))
        reconstruction = reconstruction.float().cpu()
        images = torch.stack([self.grid_images, reconstruction], dim=1)  # (B, 2, 1, H, W)
        images = images.flatten(0, 1)  # (2B, 1, H, W): window, reconstruction, window, ...
        path = save_grid(images, self.run_dir / "samples" / f"encoder-{self.step:06d}.png")
        self.recorder.log_artifact(path, "samples")

    def _save(self) -> None:
        if not distributed.is_main():
            return
        state = {
            "encoder": self.model.encoder.state_dict(),
            "optimiser": self.optimiser.state_dict(),
            "step": self.step,
            "minutes": self._minutes(),
            "random": random_state(),
            "sampler": self.sampler.state(),
        }
        save_checkpoint({"stage": "encoder", "encoder_stage": state, **self.extra}, self.last_path)

    def _minutes(self) -> float:
        if self._started is None:
            return self.minutes_before
        return self.minutes_before + (time.monotonic() - self._started) / 60.0
