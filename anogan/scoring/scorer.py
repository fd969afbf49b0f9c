"""Sliding-window scoring of whole slices: pixel anomaly maps and slice scores.

Windows of the model's size slide over each slice with the configured overlap (positions from
MONAI's `dense_patch_slices`); windows that are mostly air are left out. Each window gets its
f-AnoGAN score and residual map; maps are stitched by averaging where windows overlap, and a
slice's score aggregates its windows' scores. `WindowStream` does the work one slice at a time,
filling each forward pass with windows of as many slices (and series) as it takes, so that
`score_slices` (a stack in memory) and `anogan.scoring.series` (streams of series) share it.
"""

import logging
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from monai.data.utils import dense_patch_slices

from anogan.compute import Compute
from anogan.config import ComputeConfig, ScoringConfig
from anogan.errors import ConfigError
from anogan.models.fanogan import AnomalyOutput, FAnoGAN
from anogan.scoring.reference import REFERENCE_WINDOWS, HealthyReference, ReferenceLookup

logger = logging.getLogger(__name__)

MIN_WINDOW_FOREGROUND = 0.1  # windows with less foreground than this are not scored


@dataclass(frozen=True)
class SliceScores:
    """Results for S slices of one shape.

    Attributes:
        score: (S,) aggregated f-AnoGAN score, higher is more anomalous; less the healthy
            reference where `scoring.reference_k` is set.
        image_residual: (S,) the image term of the windows the score came from.
        feature_residual: (S,) the feature term of those windows.
        reference: (S,) the healthy reference subtracted from those windows (0 when off).
        pixel_maps: (S, 1, H, W) >= 0, stitched |x - x_hat|, zero outside the foreground.
        reconstructions: (S, 1, H, W) in [-1, 1], stitched x_hat: G(E(x)), or G of the
            refined latent (`scoring.refine_steps`).
    """

    score: torch.Tensor
    image_residual: torch.Tensor
    feature_residual: torch.Tensor
    reference: torch.Tensor
    pixel_maps: torch.Tensor
    reconstructions: torch.Tensor


@dataclass(frozen=True)
class ScoredSlice:
    """One slice through the model, on the model grid.

    Attributes:
        key: whatever the caller tagged the slice with.
        score: aggregated f-AnoGAN score, higher is more anomalous; less the healthy
            reference where `scoring.reference_k` is set.
        image_residual: the image term of the windows the score came from.
        feature_residual: the feature term of those windows.
        reference: the healthy reference subtracted from those windows (0 when off).
        image: (1, H, W) in [-1, 1], the model input.
        pixel_map: (1, H, W) >= 0, stitched |x - x_hat|, zero outside the foreground when
            scoring is masked.
        reconstruction: (1, H, W) in [-1, 1], stitched x_hat: G(E(x)), or G of the refined
            latent (`scoring.refine_steps`); the input where no window was scored.
        windows: windows scored.
    """

    key: Any
    score: float
    image_residual: float
    feature_residual: float
    reference: float
    image: torch.Tensor
    pixel_map: torch.Tensor
    reconstruction: torch.Tensor
    windows: int


@dataclass
class _PendingSlice:
    key: Any
    image: torch.Tensor  # (1, H, W)
    mask: torch.Tensor  # (1, H, W)
    maps: torch.Tensor  # (1, H, W) running sums
    reconstructions: torch.Tensor
    coverage: torch.Tensor
    remaining: int
    window_scores: list[tuple[float, float, float, float]] = field(default_factory=list)


class WindowStream:
    """Scores slices handed in one by one, batching their windows across slices.

    A slice comes back from `add` or `flush`, in the order it went in, once its last window
    has been through the model; until then it waits with at most one batch of windows, so
    memory does not grow with the number of slices.

    Args:
        model: the trained triple, put in eval mode here and moved to the compute device.
        config: overlap, aggregation, kappa, batch size, masking.
        compute: device, memory layout and compilation (default: CPU, NCHW, eager). Scores
            are always taken in fp32, whatever `compute.precision` says.

    Raises:
        ConfigError: a negative erosion, or `reference_k` set for a model without a healthy
            reference or with other masking than the reference was taken with.
    """

    def __init__(
        self, model: FAnoGAN, config: ScoringConfig, compute: ComputeConfig | None = None
    ) -> None:
        if config.mask_erosion < 0:
            raise ConfigError(
                f"scoring.mask_erosion must be 0 or more pixels, got {config.mask_erosion}"
            )
        if config.reference_k < 0:
            raise ConfigError(
                f"scoring.reference_k must be 0 (off) or more windows, got {config.reference_k}"
            )
        self._lookup = _reference_lookup(model, config)
        # NOTE: the threshold was set on fp32 scores; bf16 scores differ by about 1%, enough to
        # move slices across it, so scoring keeps fp32 and takes only device and layout.
        compute_config = replace(compute or ComputeConfig(device="cpu"), precision="fp32")
        self.compute = Compute(compute_config)
        # Scoring never differentiates, so every network may be compiled (`compute.compile`).
        self.model = self.compute.module(model.eval(), compiled=tuple(model.children()))
        self.config = config
        self._pending: deque[_PendingSlice] = deque()
        self._queue: deque[tuple[_PendingSlice, tuple[slice, slice]]] = deque()
        self.windows_scored = 0

    def add(self, key: Any, image: torch.Tensor, mask: torch.Tensor) -> list[ScoredSlice]:
        """Queue one slice; returns the slices finished meanwhile.

        Args:
            key: tag returned with the result.
            image: (1, H, W) in [-1, 1], H and W at least the model's window.
            mask: (1, H, W) in {0, 1}, the foreground.
        """
        _, height, width = image.shape
        mask = erode_mask(mask, self.config.mask_erosion)
        positions = window_slices(height, width, self.model.image_size, self.config.overlap)
        chosen = plan_windows(mask, positions)
        pending = _PendingSlice(
            key=key,
            image=image,
            mask=mask,
            maps=torch.zeros_like(image),
            reconstructions=torch.zeros_like(image),
            coverage=torch.zeros_like(image),
            remaining=len(chosen),
        )
        self._pending.append(pending)
        self._queue.extend((pending, positions[index]) for index in chosen)
        while len(self._queue) >= self.config.batch_size:
            self._run_batch()
        return self._finished()

    def flush(self) -> list[ScoredSlice]:
        """Score what is still queued; returns every slice not yet returned."""
        while self._queue:
            self._run_batch()
        return self._finished()

    @torch.inference_mode()
    def _run_batch(self) -> None:
        count = min(self.config.batch_size, len(self._queue))
        chunk = [self._queue.popleft() for _ in range(count)]
        window_images = torch.stack([item.image[:, rows, cols] for item, (rows, cols) in chunk])
        window_masks = torch.stack([item.mask[:, rows, cols] for item, (rows, cols) in chunk])
        # window_images, window_masks: (B, 1, P, P)
        # NOTE: kernels are chosen by batch size, so a window's score changes in its last bits
        # with the size of its batch (never with its neighbours in a batch of a given size).
        # The last, partial batch is padded with copies of its last window, so that a slice
        # scores the same whatever else is scored with it: a shard, the whole archive, alone.
        padding = self.config.batch_size - count
        if padding:
            window_images = torch.cat(
                [window_images, window_images[-1:].expand(padding, -1, -1, -1)]
            )
            window_masks = torch.cat([window_masks, window_masks[-1:].expand(padding, -1, -1, -1)])
        output = self._anomaly(window_images, window_masks)
        if self.config.flip:
            mirrored = self._anomaly(window_images.flip(-1), window_masks.flip(-1))
            output = AnomalyOutput(
                reconstruction=(output.reconstruction + mirrored.reconstruction.flip(-1)) / 2,
                pixel_map=(output.pixel_map + mirrored.pixel_map.flip(-1)) / 2,
                image_residual=(output.image_residual + mirrored.image_residual) / 2,
                feature_residual=(output.feature_residual + mirrored.feature_residual) / 2,
                score=(output.score + mirrored.score) / 2,
            )
        reference = torch.zeros(window_images.shape[0], dtype=torch.float64)
        if self._lookup is not None:
            reference = self._lookup(self.latents(window_images))
        for index, (item, (rows, columns)) in enumerate(chunk):
            item.maps[:, rows, columns] += output.pixel_map[index]
            item.reconstructions[:, rows, columns] += output.reconstruction[index]
            item.coverage[:, rows, columns] += 1.0
            item.window_scores.append(
                (
                    output.score[index].item() - reference[index].item(),
                    output.image_residual[index].item(),
                    output.feature_residual[index].item(),
                    reference[index].item(),
                )
            )
            item.remaining -= 1
        self.windows_scored += count

    @torch.inference_mode()
    def window_terms(
        self, images: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Latents and both score terms of windows, as given and mirrored (no reference).

        Args:
            images: (B, 1, P, P) in [-1, 1] windows of the model's size.
            masks: (B, 1, P, P) in {0, 1}, their foreground, already eroded.

        Returns:
            (B, Z) latents E(x), (B, 2) image terms and (B, 2) feature terms, fp32 on the CPU.
        """
        plain = self._anomaly(images, masks)
        mirrored = self._anomaly(images.flip(-1), masks.flip(-1))
        image_terms = torch.stack([plain.image_residual, mirrored.image_residual], dim=1)
        feature_terms = torch.stack([plain.feature_residual, mirrored.feature_residual], dim=1)
        return self.latents(images), image_terms, feature_terms

    def latents(self, images: torch.Tensor) -> torch.Tensor:
        """(B, Z) E(x) of (B, 1, P, P) windows, fp32 on the CPU."""
        return self.model.encoder(self.compute.images(images)).float().cpu()

    def _anomaly(self, images: torch.Tensor, masks: torch.Tensor) -> AnomalyOutput:
        """The model's per-window output for (B, 1, P, P) windows, in fp32 on the CPU."""
        output = self.model.anomaly(
            self.compute.images(images),
            self.config.kappa,
            self.compute.images(masks) if self.config.masked else None,
            self.config.refine_steps,
            self.config.refine_step_size,
            self.config.residual,
        )
        return AnomalyOutput(*(tensor.float().cpu() for tensor in output))

    def _finished(self) -> list[ScoredSlice]:
        done = []
        while self._pending and self._pending[0].remaining == 0:
            done.append(self._stitch(self._pending.popleft()))
        return done

    def _stitch(self, item: _PendingSlice) -> ScoredSlice:
        covered = item.coverage.clamp(min=1.0)
        pixel_map = item.maps / covered
        if self.config.masked:
            pixel_map = pixel_map * item.mask
        if self.config.map_sigma > 0:
            pixel_map = smooth_map(pixel_map, item.mask, self.config.map_sigma)
        score, image_residual, feature_residual, reference = aggregate_windows(
            item.window_scores, self.config
        )
        return ScoredSlice(
            key=item.key,
            score=score,
            image_residual=image_residual,
            feature_residual=feature_residual,
            reference=reference,
            image=item.image,
            pixel_map=pixel_map,
            reconstruction=torch.where(
                item.coverage > 0, item.reconstructions / covered, item.image
            ),
            windows=len(item.window_scores),
        )


def erode_mask(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """A (1, H, W) foreground in {0, 1} shrunk by `pixels` (a square structuring element).

    Pixels beyond the slice's edge count as foreground, so that a body filling the slice keeps
    its edge pixels. Where nothing would be left, the mask comes back as it was.
    """
    if pixels == 0:
        return mask
    background = 1.0 - (mask > 0).float()
    # Max pooling pads with -inf, so the outside of the slice never spreads the background.
    grown = F.max_pool2d(background.unsqueeze(0), 2 * pixels + 1, stride=1, padding=pixels)
    eroded = (1.0 - grown[0]).to(mask.dtype)  # (1, H, W)
    return eroded if eroded.any() else mask


def smooth_map(pixel_map: torch.Tensor, mask: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian smoothing of a (1, H, W) map inside its (1, H, W) foreground.

    Normalised convolution: the smoothed map is divided by the smoothed mask, so that pixels
    near the edge of the foreground are not darkened by the air outside it.
    """
    radius = max(1, round(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    inside = (mask > 0).float()
    stacked = torch.stack([pixel_map.float() * inside, inside])  # (2, 1, H, W)
    stacked = F.conv2d(
        F.pad(stacked, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1)
    )
    stacked = F.conv2d(
        F.pad(stacked, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1)
    )
    smoothed = stacked[0] / stacked[1].clamp(min=1e-6)
    return (smoothed * inside).to(pixel_map.dtype)


def window_slices(
    height: int, width: int, patch_size: int, overlap: float
) -> list[tuple[slice, slice]]:
    """Window positions covering an (H, W) slice, neighbours sharing `overlap` of a side."""
    stride = max(1, round(patch_size * (1.0 - overlap)))
    positions = dense_patch_slices((height, width), (patch_size, patch_size), (stride, stride))
    return [
        (slice(int(r.start), int(r.stop)), slice(int(c.start), int(c.stop))) for r, c in positions
    ]


def score_slices(
    model: FAnoGAN,
    images: torch.Tensor,
    masks: torch.Tensor,
    config: ScoringConfig,
    compute: ComputeConfig | None = None,
) -> SliceScores:
    """Score slices window by window.

    Args:
        model: the trained triple, put in eval mode here.
        images: (S, 1, H, W) in [-1, 1], H and W at least the model's window.
        masks: (S, 1, H, W) in {0, 1}, the foreground.
        config: overlap, aggregation, kappa, batch size, masking.
        compute: device and memory layout, as for WindowStream.

    Returns:
        SliceScores for the S slices.
    """
    stream = WindowStream(model, config, compute)
    results: list[ScoredSlice] = []
    for index in range(images.shape[0]):
        results.extend(stream.add(index, images[index], masks[index]))
    results.extend(stream.flush())
    return SliceScores(
        score=torch.tensor([result.score for result in results]),
        image_residual=torch.tensor([result.image_residual for result in results]),
        feature_residual=torch.tensor([result.feature_residual for result in results]),
        reference=torch.tensor([result.reference for result in results]),
        pixel_maps=torch.stack([result.pixel_map for result in results]),
        reconstructions=torch.stack([result.reconstruction for result in results]),
    )


def plan_windows(mask: torch.Tensor, positions: list[tuple[slice, slice]]) -> list[int]:
    """Windows of one slice worth scoring: enough foreground; at least its fullest window.

    Args:
        mask: (1, H, W) in {0, 1}, the slice's foreground.
        positions: the window positions of `window_slices`.

    Returns:
        Indices into `positions`.
    """
    fractions = torch.tensor([mask[0, rows, columns].mean().item() for rows, columns in positions])
    chosen = torch.nonzero(fractions >= MIN_WINDOW_FOREGROUND).flatten().tolist()
    return chosen or [int(fractions.argmax())]


def aggregate_windows(
    window_scores: list[tuple[float, float, float, float]], config: ScoringConfig
) -> tuple[float, float, float, float]:
    """A slice's score from its windows' (score, image residual, feature residual, reference).

    NOTE: `topk` (the mean of the k highest windows) is the default: a lesion fills a few
    windows of a large slice, so the mean dilutes it, while the single maximum follows the
    noisiest window of healthy slices too.
    """
    table = torch.tensor(window_scores, dtype=torch.float64)  # (windows, 4)
    if config.aggregation == "mean":
        row = table.mean(dim=0)
    else:
        count = 1 if config.aggregation == "max" else min(config.top_k, len(window_scores))
        top = table[:, 0].topk(count).indices
        row = table[top].mean(dim=0)
    return float(row[0]), float(row[1]), float(row[2]), float(row[3])


def build_reference(
    model: FAnoGAN,
    images: torch.Tensor,
    masks: torch.Tensor,
    config: ScoringConfig,
    compute: ComputeConfig | None = None,
    seed: int = 0,
    limit: int = REFERENCE_WINDOWS,
) -> HealthyReference:
    """The healthy reference of a trained model, from the windows of its training slices.

    The windows are those the scorer would score on these slices (same grid, erosion and
    foreground rule); where there are more than `limit`, a seeded random `limit` of them.

    Args:
        model: the trained triple.
        images: (S, 1, H, W) in [-1, 1], healthy training slices.
        masks: (S, 1, H, W) in {0, 1}, their foreground.
        config: overlap, masking, erosion and batch size (kappa and flip are applied later).
        compute: device and layout, as for WindowStream.
        seed: fixes the subsample.
        limit: windows kept at most.
    """
    stream = WindowStream(model, replace(config, reference_k=0, refine_steps=0), compute)
    size = model.image_size
    windows: list[tuple[int, slice, slice]] = []
    eroded = []
    for index in range(images.shape[0]):
        mask = erode_mask(masks[index], config.mask_erosion)
        eroded.append(mask)
        _, height, width = mask.shape
        positions = window_slices(height, width, size, config.overlap)
        windows.extend((index, *positions[chosen]) for chosen in plan_windows(mask, positions))
    if len(windows) > limit:
        generator = torch.Generator().manual_seed(seed)
        keep = torch.randperm(len(windows), generator=generator)[:limit].sort().values
        windows = [windows[position] for position in keep.tolist()]

    parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for start in range(0, len(windows), config.batch_size):
        batch = windows[start : start + config.batch_size]
        window_images = torch.stack([images[index][:, rows, cols] for index, rows, cols in batch])
        window_masks = torch.stack([eroded[index][:, rows, cols] for index, rows, cols in batch])
        parts.append(stream.window_terms(window_images, window_masks))
    latents, image_terms, feature_terms = (torch.cat(part) for part in zip(*parts, strict=True))
    logger.info("Healthy reference: %d training windows", len(windows))
    return HealthyReference(
        latents=latents,
        image_residual=image_terms.double(),
        feature_residual=feature_terms.double(),
        masked=config.masked,
        mask_erosion=config.mask_erosion,
        residual=config.residual,
    )


def _reference_lookup(model: FAnoGAN, config: ScoringConfig) -> ReferenceLookup | None:
    """The lookup `reference_k` asks for, or None when it is 0."""
    if config.reference_k == 0:
        return None
    reference = getattr(model, "reference", None)
    if reference is None:
        raise ConfigError(
            f"scoring.reference_k is {config.reference_k}, but this model has no healthy "
            "reference (model files written before anogan kept one, or a baseline); set "
            "scoring.reference_k=0 or retrain"
        )
    return ReferenceLookup(reference, config)
