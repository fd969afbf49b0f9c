"""Near-duplicate groups of slices, and a hold-out that never splits a group.

Real collections hold the same slice more than once (re-encoded, resized) and neighbouring
slices of one subject. Holding back single images for calibration would then calibrate on
images whose twins were trained on, and the threshold would come out too low. Slices are linked
when their mean squared difference on a small common grid is below a threshold, linked slices
form one group, and a hold-out takes whole groups.
"""

import logging

import numpy as np
import torch
import torch.nn.functional as F
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

logger = logging.getLogger(__name__)

GROUP_GRID = 64  # side of the grid slices are compared on
DUPLICATE_MSE = 0.02  # mean squared difference (intensities in [-1, 1]) that links two slices
BLOCK = 512  # rows of the distance matrix computed at once


def near_duplicate_groups(
    images: torch.Tensor,
    item_index: np.ndarray | None = None,
    threshold: float = DUPLICATE_MSE,
    grid: int = GROUP_GRID,
) -> np.ndarray:
    """Group slices linked, directly or through others, by a small mean squared difference.

    Args:
        images: (N, 1, H, W) in [-1, 1].
        item_index: optional (N,) input of each slice; slices of one input (a volume, a
            series) are linked too, so that a hold-out never splits an input.
        threshold: pairs whose mean squared difference on the grid is below it are linked.
        grid: slices are resampled to grid x grid before comparing.

    Returns:
        (N,) int64 group index per slice, groups numbered from 0.
    """
    count = images.shape[0]
    if count == 0:
        return np.zeros(0, dtype=np.int64)
    small = F.interpolate(images.float(), size=(grid, grid), mode="area").flatten(1)  # (N, D)
    squares = small.square().sum(dim=1)
    rows, columns = [], []
    for start in range(0, count, BLOCK):
        block = small[start : start + BLOCK]
        # ||a - b||^2 = |a|^2 + |b|^2 - 2 a.b, divided by D for the mean.
        distances = squares[start : start + BLOCK, None] + squares[None] - 2 * block @ small.T
        linked = (distances / small.shape[1] < threshold).nonzero()
        rows.append(linked[:, 0] + start)
        columns.append(linked[:, 1])
    row, column = torch.cat(rows).numpy(), torch.cat(columns).numpy()
    if item_index is not None:
        # Link every slice to the first slice of its input.
        _, first = np.unique(item_index, return_index=True)
        firsts = first[np.searchsorted(np.unique(item_index), item_index)]
        row, column = np.concatenate([row, np.arange(count)]), np.concatenate([column, firsts])
    graph = coo_matrix((np.ones(row.size), (row, column)), shape=(count, count))
    _, labels = connected_components(graph, directed=False)
    return labels.astype(np.int64)


def grouped_holdout(groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Choose whole groups to hold back, about `fraction` of the slices in all.

    Groups are taken in a seeded random order until the share is reached; a group that would
    overshoot by more than half its size is skipped, so one large group does not swallow the
    hold-out.

    Args:
        groups: (N,) group index per slice, from `near_duplicate_groups`.
        fraction: share of slices to hold back, in (0, 1).
        seed: fixes the choice.

    Returns:
        (N,) bool, True for held-back slices.
    """
    held = np.zeros(groups.shape[0], dtype=bool)
    if groups.size == 0 or fraction <= 0:
        return held
    target = fraction * groups.size
    names, sizes = np.unique(groups, return_counts=True)
    taken = 0
    for index in np.random.default_rng(seed).permutation(names.size):
        if taken >= target:
            break
        if taken + sizes[index] - target > sizes[index] / 2:
            continue
        held |= groups == names[index]
        taken += int(sizes[index])
    return held
