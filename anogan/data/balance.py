"""Sampling weights that even out how often each kind of healthy slice is drawn in training.

Healthy collections are lumpy: one view or sequence dominates (axial T2 in a brain set, the
frontal view in chest X-ray, mid-abdomen levels in CT), rarer ones appear a few dozen times, and
some slices are stored many times over (re-encoded copies, neighbouring slices of one subject).
Drawn uniformly, a GAN on a short budget learns the common kinds and drops the rare ones; the
encoder then cannot reproduce a rare healthy slice, and it is flagged as anomalous.

`density_weights` gives each slice a weight inversely proportional to the number of training
slices near it (itself included), so a group of twenty copies is drawn about as often as one
slice, and a slice with no neighbour as often as a whole dense group. Nearness is the root mean
square difference of the slices shrunk to a small grid, within a radius set from the data: the
median distance of a slice to its `NEIGHBOURS`-th nearest neighbour. f-AnoGAN scores by
reconstruction, so covering every healthy kind matters more than matching how common it is.
"""

import logging

import numpy as np
import torch
import torch.nn.functional as F

from anogan.config import Sampling

logger = logging.getLogger(__name__)

GRID = 16  # side, in pixels, of the grid slices are shrunk to before they are compared
NEIGHBOURS = 5  # the radius is the median distance to this nearest neighbour
CHUNK = 1024  # slices compared against all others at a time, to bound memory


def sampling_weights(images: torch.Tensor, sampling: Sampling) -> np.ndarray | None:
    """The `weights` of a PatchSampler under `data.sampling`: None for uniform draws.

    Args:
        images: (S, 1, H, W) in [-1, 1], the training slices.
        sampling: `uniform` or `balanced`.
    """
    return density_weights(images) if sampling == "balanced" else None


def density_weights(images: torch.Tensor) -> np.ndarray:
    """Sampling probabilities of the slices, inversely proportional to their local density.

    Args:
        images: (S, 1, H, W) in [-1, 1].

    Returns:
        (S,) float64, positive, summing to 1. Uniform when S is at most NEIGHBOURS.
    """
    count = int(images.shape[0])
    if count <= NEIGHBOURS:
        return np.full(count, 1.0 / count)
    small = F.adaptive_avg_pool2d(images.float(), GRID).flatten(1)  # (S, GRID * GRID)

    kth = torch.cat(
        [_distances(small, rows).kthvalue(NEIGHBOURS + 1, 1).values for rows in _chunks(count)]
    )
    radius = float(kth.median())
    # Within `radius` of itself a slice always counts itself (distance 0).
    neighbours = torch.cat([(_distances(small, rows) <= radius).sum(1) for rows in _chunks(count)])

    weights = 1.0 / neighbours.double().numpy()
    weights /= weights.sum()
    logger.info(
        "Balanced sampling over %d slices: the equivalent of %.0f equally drawn slices, "
        "the rarest drawn %.1fx as often as under uniform sampling",
        count,
        1.0 / float(np.square(weights).sum()),
        float(weights.max()) * count,
    )
    return weights


def _chunks(count: int) -> list[slice]:
    return [slice(start, min(start + CHUNK, count)) for start in range(0, count, CHUNK)]


def _distances(small: torch.Tensor, rows: slice) -> torch.Tensor:
    """(R, S) root mean square differences between the slices in `rows` and every slice."""
    return torch.cdist(small[rows], small) / small.shape[1] ** 0.5
