"""WGAN-GP training of the generator and critic on healthy windows.

Gulrajani et al., "Improved Training of Wasserstein GANs" (2017): `n_critic` critic steps per
generator step, a gradient penalty of weight `gp_weight` on images interpolated between real and
generated ones, Adam with betas (0, 0.9). Optionally DiffAugment on everything the critic sees.
Every `sample_every` steps a grid from a fixed latent batch is saved; every `quality_every` steps
the sliced Wasserstein distance picks the best generator; every `checkpoint_every` steps the
whole state is written, so `--resume` loses at most one interval.

Under torchrun (see `anogan.distributed`) generator and critic are wrapped in
DistributedDataParallel, the generator's batch norm takes global statistics, `batch_size` is
the global batch and each rank computes its part of it; rank 0 alone writes grids,
checkpoints and SWD figures and decides when the time budget is spent.
"""

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from anogan import distributed
from anogan.compute import Compute
from anogan.config import ComputeConfig, WGANConfig
from anogan.data.patches import PatchSampler
from anogan.models.diffaugment import diff_augment
from anogan.models.fanogan import FAnoGAN
from anogan.training.checkpoint import (
    load_checkpoint,
    random_state,
    restore_random_state,
    save_checkpoint,
)
from anogan.training.monitor import (
    BestTracker,
    RunRecorder,
    progress_bar,
    save_grid,
    sliced_wasserstein,
)

logger = logging.getLogger(__name__)

GRID_SAMPLES = 64  # images in each sample grid (8 x 8)
QUALITY_SAMPLES = 512  # real and generated windows compared by the SWD
LOG_EVERY = 10  # generator steps between loss records


@dataclass(frozen=True)
class WGANResult:
    """How the WGAN stage ended: steps done, best SWD and its step, minutes spent."""

    steps: int
    best_swd: float
    best_step: int
    minutes: float
    stopped_by_time: bool


def gradient_penalty(
    critic: Callable[[torch.Tensor], torch.Tensor],
    real: torch.Tensor,
    fake: torch.Tensor,
    alpha: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean of (||grad_x critic(x)||_2 - 1)^2 at random points between real and fake.

    Args:
        critic: images (B, 1, H, W) -> scores (B,).
        real: (B, 1, H, W).
        fake: (B, 1, H, W), detached from the generator.
        alpha: (B, 1, 1, 1) in [0, 1], the weights of `real`; default: drawn uniformly.

    Returns:
        A scalar tensor that carries gradients to the critic's parameters.
    """
    mixed = interpolate(real, fake, alpha)
    return penalty_at(critic(mixed), mixed)


def interpolate(
    real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor | None = None
) -> torch.Tensor:
    """alpha * real + (1 - alpha) * fake, (B, 1, H, W), cut from both and requiring grad.

    Args:
        real: (B, 1, H, W).
        fake: (B, 1, H, W).
        alpha: (B, 1, 1, 1) in [0, 1]; default: drawn uniformly.
    """
    if alpha is None:
        alpha = torch.rand(real.shape[0], 1, 1, 1, device=real.device, dtype=real.dtype)
    # `* 1.0` makes the interpolate a non-leaf, which FlopCounterMode needs (see STACK-NOTES).
    return (alpha * real + (1.0 - alpha) * fake).detach().requires_grad_(True) * 1.0


def penalty_at(scores: torch.Tensor, mixed: torch.Tensor) -> torch.Tensor:
    """The gradient penalty from the critic's scores (B,) of the interpolates `mixed`."""
    (gradients,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    norms = gradients.flatten(1).norm(2, dim=1)  # (B,)
    return (norms - 1.0).square().mean()


class WGANTrainer:
    """Trains `model.generator` and `model.critic`; owns their optimisers and the fixed z.

    Args:
        model: the f-AnoGAN triple; its encoder is not touched here.
        sampler: healthy training windows.
        config: the WGAN section of the run config.
        run_dir: where sample grids and checkpoints go.
        recorder: receives losses, SWD and sample grids.
        seed: fixes the latent batch of the sample grids and the SWD directions.
        extra: plain values stored in every checkpoint (the resolved config).
        compute: device, precision and memory layout; the model is moved there. Default: CPU,
            fp32.
    """

    def __init__(
        self,
        model: FAnoGAN,
        sampler: PatchSampler,
        config: WGANConfig,
        run_dir: Path,
        recorder: RunRecorder,
        seed: int,
        extra: dict[str, Any],
        compute: Compute | None = None,
    ) -> None:
        self.model, self.sampler, self.config = model, sampler, config
        self.run_dir, self.recorder, self.seed, self.extra = Path(run_dir), recorder, seed, extra
        self.compute = compute or Compute(ComputeConfig(device="cpu"))
        self.compute.module(model, compiled=(model.generator,))
        self.local_batch = distributed.local_batch(config.batch_size, "wgan.batch_size")
        self.batches = distributed.ShardedSampler(sampler)
        if distributed.world_size() > 1:
            distributed.distribute_batch_norm(model.generator, self.compute.device)
        self.generator_net = distributed.data_parallel(model.generator, self.compute.device)
        self.critic_net = distributed.data_parallel(model.critic, self.compute.device)
        self.generator_optimiser = torch.optim.Adam(
            model.generator.parameters(), lr=config.lr, betas=config.betas
        )
        self.critic_optimiser = torch.optim.Adam(
            model.critic.parameters(), lr=config.lr, betas=config.betas
        )
        self.fixed_latent = torch.randn(
            GRID_SAMPLES, model.latent_dim, generator=torch.Generator().manual_seed(seed)
        )  # (64, Z), kept on the CPU so that checkpoints load anywhere
        self.step = 0
        self.minutes_before = 0.0
        self.best = BestTracker()
        self._quality_step = -1
        self._augment_calls = 0  # within a step, to seed each rank's DiffAugment draws
        self._started: float | None = None

    @property
    def last_path(self) -> Path:
        return self.run_dir / "checkpoints" / "wgan-last.pt"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "checkpoints" / "wgan-best.pt"

    def train(self) -> WGANResult:
        """Run until `config.iterations` generator steps or `config.max_minutes` are done."""
        config, main = self.config, distributed.is_main()
        self._started = time.monotonic()
        stopped_by_time = False
        with progress_bar(config.iterations, self.step, "WGAN-GP") as progress:
            while self.step < config.iterations:
                losses = self.train_step()
                self.step += 1
                progress.update(1)
                if self.step % LOG_EVERY == 0 or self.step == config.iterations:
                    losses = distributed.mean_over_ranks(losses)
                    if main:
                        self.recorder.log_metrics(losses, self.step)
                    progress.set_postfix(critic=f"{losses['wgan/critic_loss']:.3f}", refresh=False)
                self._milestones()
                if config.max_minutes and distributed.broadcast_flag(
                    self._minutes() >= config.max_minutes
                ):
                    stopped_by_time = True
                    logger.info("WGAN-GP stopped by its %.1f minute budget", config.max_minutes)
                    break

        self._measure_quality()
        self._save(self.last_path)
        distributed.barrier()
        return WGANResult(
            self.step, self.best.value, self.best.step, self._minutes(), stopped_by_time
        )

    def resume(self, path: Path | None = None) -> None:
        """Restore generator, critic, optimisers, step and random states from a checkpoint."""
        record = load_checkpoint(path or self.last_path)
        state = record["wgan"]
        self.model.generator.load_state_dict(state["generator"])
        self.model.critic.load_state_dict(state["critic"])
        self.generator_optimiser.load_state_dict(state["generator_optimiser"])
        self.critic_optimiser.load_state_dict(state["critic_optimiser"])
        self.fixed_latent = state["fixed_latent"]
        self.step, self.minutes_before = int(state["step"]), float(state["minutes"])
        self.best = BestTracker(float(state["best_swd"]), int(state["best_step"]))
        restore_random_state(state["random"])
        self.sampler.load_state(state["sampler"])
        logger.info("Resumed WGAN-GP at step %d", self.step)

    def load_best(self) -> None:
        """Put the generator and critic of the best SWD back into the model.

        Rank 0 reads the checkpoint and sends the weights to the other ranks, which need not
        see its run folder.
        """
        if distributed.broadcast_flag(self.best_path.is_file()):
            if distributed.is_main():
                state = load_checkpoint(self.best_path)["wgan"]
                self.model.generator.load_state_dict(state["generator"])
                self.model.critic.load_state_dict(state["critic"])
                logger.info(
                    "Using the generator of step %d (SWD %.2f)", state["step"], state["best_swd"]
                )
            distributed.broadcast_module(self.model.generator)
            distributed.broadcast_module(self.model.critic)

    def train_step(self) -> dict[str, float]:
        """One generator iteration: `n_critic` critic updates, then one generator update.

        Under a process group each rank computes its `local_batch` of the global batch; the
        returned losses are this rank's.
        """
        config, model, compute = self.config, self.model, self.compute
        model.generator.train()
        model.critic.train()
        batch = self.local_batch
        self._augment_calls = 0

        for _ in range(config.n_critic):
            real = compute.images(self.batches.sample(config.batch_size))
            with torch.no_grad(), compute.autocast():
                fake = self.generator_net(self._latent())
            real_seen, fake_seen = self._augment(real), self._augment(fake.float())
            mixed = interpolate(real_seen, fake_seen, self._interpolation_weights())
            with compute.autocast():
                # NOTE: one critic pass over real and fake together (its layer norm is per
                # sample, so this equals two passes and keeps the cores busier), and one over
                # the interpolates. With all three in one pass the penalty's double backward ran
                # over real and fake too: training at demo widths fell from 1.35x the textbook
                # loop to 0.86x (make bench, bf16 channels-last). Two forwards of the wrapped
                # critic before one backward agree with one process under DDP to float
                # rounding (tests/training/test_distributed.py).
                scores = self.critic_net(torch.cat([real_seen, fake_seen])).float()  # (2B,)
                real_score, fake_score = scores[:batch].mean(), scores[batch:].mean()
                penalty = penalty_at(self.critic_net(mixed).float(), mixed)
            critic_loss = fake_score - real_score + config.gp_weight * penalty
            self.critic_optimiser.zero_grad(set_to_none=True)
            critic_loss.backward()
            self.critic_optimiser.step()

        # The critic is frozen for the generator's update: its gradients would be thrown away,
        # and under DDP only the generator's are to be averaged.
        model.critic.requires_grad_(False)
        with compute.autocast():
            fake = self.generator_net(self._latent())
            generator_loss = -model.critic(self._augment(fake)).float().mean()
        self.generator_optimiser.zero_grad(set_to_none=True)
        generator_loss.backward()
        self.generator_optimiser.step()
        model.critic.requires_grad_(True)
        return {
            "wgan/critic_loss": critic_loss.item(),
            "wgan/wasserstein_estimate": (real_score - fake_score).item(),
            "wgan/gradient_penalty": penalty.item(),
            "wgan/generator_loss": generator_loss.item(),
        }

    def _latent(self) -> torch.Tensor:
        """This rank's (B, Z) part of a global standard normal batch, on the compute device."""
        size = (self.config.batch_size, self.model.latent_dim)
        return distributed.own_part(torch.randn(size, device=self.compute.device))

    def _interpolation_weights(self) -> torch.Tensor:
        """This rank's (B, 1, 1, 1) part of the global batch's uniform penalty weights."""
        size = (self.config.batch_size, 1, 1, 1)
        return distributed.own_part(torch.rand(size, device=self.compute.device))

    def _augment(self, images: torch.Tensor) -> torch.Tensor:
        if not self.config.diffaugment:
            return images
        if distributed.world_size() == 1:
            return diff_augment(images, self.config.diffaugment_policy)
        # NOTE: the ranks share one random stream, so drawn from it each rank's part of the
        # batch would get the same transforms. Under a process group the transforms come from
        # a stream of this rank, step and call instead, and the shared stream is left as it
        # was: N ranks then augment like one process does, but not with the same draws.
        self._augment_calls += 1
        devices = [self.compute.device] if self.compute.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(
                hash((self.seed, self.step, self._augment_calls, distributed.rank())) % 2**63
            )
            return diff_augment(images, self.config.diffaugment_policy)

    def _milestones(self) -> None:
        config, step = self.config, self.step
        if config.sample_every and step % config.sample_every == 0 and distributed.is_main():
            self._save_samples()
        if config.quality_every and step % config.quality_every == 0:
            self._measure_quality()
        if config.checkpoint_every and step % config.checkpoint_every == 0:
            self._save(self.last_path)

    @torch.no_grad()
    def _save_samples(self) -> None:
        self.model.generator.eval()
        with self.compute.autocast():
            samples = self.model.generator(self.fixed_latent.to(self.compute.device)).float()
        path = save_grid(samples, self.run_dir / "samples" / f"wgan-{self.step:06d}.png")
        self.recorder.log_artifact(path, "samples")
        logger.debug("Sample grid of step %d in %s", self.step, path)

    @torch.no_grad()
    def _measure_quality(self) -> None:
        if self._quality_step == self.step:
            return
        self._quality_step = self.step
        # Every rank draws the real windows, so that the samplers' streams stay equal; rank 0
        # alone generates, measures and keeps the best.
        real = self.sampler.sample(QUALITY_SAMPLES)
        if not distributed.is_main():
            return
        self.model.generator.eval()
        generator = torch.Generator().manual_seed(self.seed + 1)
        latent = torch.randn(QUALITY_SAMPLES, self.model.latent_dim, generator=generator)
        with self.compute.autocast():
            fake = torch.cat(
                [
                    self.model.generator(chunk.to(self.compute.device)).float().cpu()
                    for chunk in latent.split(128)
                ]
            )
        swd = sliced_wasserstein(real, fake, seed=self.seed)
        self.recorder.log_metrics({"wgan/swd": swd}, self.step)
        if self.best.update(swd, self.step):
            self._save(self.best_path)
            logger.info("WGAN-GP step %d: SWD %.2f, new best", self.step, swd)
        else:
            logger.info("WGAN-GP step %d: SWD %.2f (best %.2f)", self.step, swd, self.best.value)

    def _save(self, path: Path) -> None:
        if not distributed.is_main():
            return
        state = {
            "generator": copy.deepcopy(self.model.generator.state_dict()),
            "critic": copy.deepcopy(self.model.critic.state_dict()),
            "generator_optimiser": self.generator_optimiser.state_dict(),
            "critic_optimiser": self.critic_optimiser.state_dict(),
            "fixed_latent": self.fixed_latent,
            "step": self.step,
            "minutes": self._minutes(),
            "best_swd": self.best.value,
            "best_step": self.best.step,
            "random": random_state(),
            "sampler": self.sampler.state(),
        }
        save_checkpoint({"stage": "wgan", "wgan": state, **self.extra}, path)

    def _minutes(self) -> float:
        if self._started is None:
            return self.minutes_before
        return self.minutes_before + (time.monotonic() - self._started) / 60.0
