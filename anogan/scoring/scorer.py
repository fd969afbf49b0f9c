"""Sliding-window scoring of whole slices: pixel anomaly maps and slice scores.

Windows of the model's size slide over each slice with the configured overlap (positions from
MONAI's `dense_patch_slices`); windows that are mostly air are left out. Each window gets its
f-AnoGAN score and residual map; maps are stitched by averaging where windows overlap, and a
slice's score aggregates its windows' scores.
"""

import logging
from dataclasses import dataclass

import torch
from monai.data.utils import dense_patch_slices

from anogan.config import ScoringConfig
from anogan.models.fanogan import FAnoGAN

logger = logging.getLogger(__name__)

MIN_WINDOW_FOREGROUND = 0.1  # windows with less foreground than this are not scored


@dataclass(frozen=True)
class SliceScores:
    """Results for S slices of one shape.

    Attributes:
        score: (S,) aggregated f-AnoGAN score, higher is more anomalous.
        image_residual: (S,) the image term of the windows the score came from.
        feature_residual: (S,) the feature term of those windows.
        pixel_maps: (S, 1, H, W) >= 0, stitched |x - G(E(x))|, zero outside the foreground.
        reconstructions: (S, 1, H, W) in [-1, 1], stitched G(E(x)).
    """

    score: torch.Tensor
    image_residual: torch.Tensor
    feature_residual: torch.Tensor
    pixel_maps: torch.Tensor
    reconstructions: torch.Tensor


def window_slices(
    height: int, width: int, patch_size: int, overlap: float
) -> list[tuple[slice, slice]]:
    """Window positions covering an (H, W) slice, neighbours sharing `overlap` of a side."""
    stride = max(1, round(patch_size * (1.0 - overlap)))
    positions = dense_patch_slices((height, width), (patch_size, patch_size), (stride, stride))
    return [
        (slice(int(r.start), int(r.stop)), slice(int(c.start), int(c.stop))) for r, c in positions
    ]


@torch.inference_mode()
def score_slices(
    model: FAnoGAN, images: torch.Tensor, masks: torch.Tensor, config: ScoringConfig
) -> SliceScores:
    """Score slices window by window.

    Args:
        model: the trained triple, put in eval mode here.
        images: (S, 1, H, W) in [-1, 1], H and W at least the model's window.
        masks: (S, 1, H, W) in {0, 1}, the foreground.
        config: overlap, aggregation, kappa, batch size, masking.

    Returns:
        SliceScores for the S slices.
    """
    model.eval()
    slices, _, height, width = images.shape
    patch = model.image_size
    positions = window_slices(height, width, patch, config.overlap)
    plan = _plan_windows(masks, positions, patch)  # [(slice index, position index)]

    maps = torch.zeros_like(images)
    reconstructions = torch.zeros_like(images)
    coverage = torch.zeros_like(images)
    window_scores: list[list[tuple[float, float, float]]] = [[] for _ in range(slices)]
    for start in range(0, len(plan), config.batch_size):
        chunk = plan[start : start + config.batch_size]
        window_images = _crop_windows(images, chunk, positions)  # (B, 1, P, P)
        window_masks = _crop_windows(masks, chunk, positions)
        output = model.anomaly(window_images, config.kappa, window_masks if config.masked else None)
        for index, (slice_index, position) in enumerate(chunk):
            rows, columns = positions[position]
            maps[slice_index, :, rows, columns] += output.pixel_map[index]
            reconstructions[slice_index, :, rows, columns] += output.reconstruction[index]
            coverage[slice_index, :, rows, columns] += 1.0
            window_scores[slice_index].append(
                (
                    output.score[index].item(),
                    output.image_residual[index].item(),
                    output.feature_residual[index].item(),
                )
            )

    covered = coverage.clamp(min=1.0)
    score, image_residual, feature_residual = _aggregate(window_scores, config)
    return SliceScores(
        score=score,
        image_residual=image_residual,
        feature_residual=feature_residual,
        pixel_maps=maps / covered * masks if config.masked else maps / covered,
        reconstructions=torch.where(coverage > 0, reconstructions / covered, images),
    )


def _crop_windows(
    tensor: torch.Tensor, chunk: list[tuple[int, int]], positions: list[tuple[slice, slice]]
) -> torch.Tensor:
    crops = []
    for slice_index, position in chunk:
        rows, columns = positions[position]
        crops.append(tensor[slice_index, :, rows, columns])
    return torch.stack(crops)


def _plan_windows(
    masks: torch.Tensor, positions: list[tuple[slice, slice]], patch: int
) -> list[tuple[int, int]]:
    """Windows worth scoring: enough foreground; at least the fullest window of each slice."""
    plan = []
    for slice_index in range(masks.shape[0]):
        fractions = torch.tensor(
            [masks[slice_index, 0, rows, columns].mean().item() for rows, columns in positions]
        )
        chosen = torch.nonzero(fractions >= MIN_WINDOW_FOREGROUND).flatten().tolist()
        if not chosen:
            chosen = [int(fractions.argmax())]
        plan.extend((slice_index, position) for position in chosen)
    return plan


def _aggregate(
    window_scores: list[list[tuple[float, float, float]]], config: ScoringConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slice scores from window scores (columns: score, image residual, feature residual).

    NOTE: `topk` (the mean of the k highest windows) is the default: a lesion fills a few
    windows of a large slice, so the mean dilutes it, while the single maximum follows the
    noisiest window of healthy slices too.
    """
    rows = []
    for windows in window_scores:
        table = torch.tensor(windows)  # (windows, 3)
        if config.aggregation == "mean":
            rows.append(table.mean(dim=0))
        else:
            count = 1 if config.aggregation == "max" else min(config.top_k, len(windows))
            top = table[:, 0].topk(count).indices
            rows.append(table[top].mean(dim=0))
    stacked = torch.stack(rows)  # (S, 3)
    return stacked[:, 0], stacked[:, 1], stacked[:, 2]
