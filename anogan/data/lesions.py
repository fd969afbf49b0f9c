"""Synthetic lesions with exact masks, for the demo set and for localisation benchmarks.

Kinds, each with soft edges so that a lesion is not found by its outline alone: `bright` and
`dark` blobs (intensities pushed to +-2.5 foreground standard deviations), `ring` (a bright rim
round a dark core, like an enhancing tumour with a necrotic centre) and `texture` (coarse
noise of the tissue's own amplitude, same mean). Intensities are derived from the slice's
own foreground statistics, so any modality works.
"""

import logging
from typing import Literal, get_args

import numpy as np
from scipy import ndimage

logger = logging.getLogger(__name__)

LesionKind = Literal["bright", "dark", "ring", "texture"]
LESION_KINDS: tuple[str, ...] = get_args(LesionKind)
EDGE_WIDTH = 2.0  # pixels over which a lesion fades into the tissue
CONTRAST_SDS = 2.5  # lesion intensity offset in foreground standard deviations
RING_CORE_RATIO = 0.55  # inner radius of a ring as a fraction of its outer radius


def insert_lesion(
    image: np.ndarray,
    foreground: np.ndarray,
    kind: LesionKind,
    radius: float,
    rng: np.random.Generator,
    strength: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Insert one lesion inside the foreground of a slice.

    Args:
        image: (H, W) float, any intensity units.
        foreground: (H, W) bool, where the lesion may go.
        kind: one of LESION_KINDS.
        radius: mean radius in pixels; the shape is a randomly rotated ellipse.
        rng: the source of randomness (seeded by the caller).
        strength: scales the intensity change (1.0: CONTRAST_SDS standard deviations).

    Returns:
        The new (H, W) image (same dtype) and the (H, W) bool lesion mask.

    Raises:
        ValueError: unknown kind or an empty foreground.
    """
    if kind not in LESION_KINDS:
        raise ValueError(f"unknown lesion kind {kind!r}; known: {LESION_KINDS}")
    if not foreground.any():
        raise ValueError("cannot place a lesion: the slice has no foreground")

    profile = _ellipse_profile(image.shape, _pick_centre(foreground, radius, rng), radius, rng)
    profile *= foreground
    tissue = image[foreground].astype(np.float64)
    mean, std = float(tissue.mean()), max(float(tissue.std()), 1e-6)
    offset = CONTRAST_SDS * std * strength

    result = image.astype(np.float64)
    if kind == "bright":
        result = result * (1 - profile) + profile * (mean + offset)
    elif kind == "dark":
        result = result * (1 - profile) + profile * max(mean - offset, float(tissue.min()))
    elif kind == "ring":
        core = _shrink(profile, RING_CORE_RATIO)
        rim = np.clip(profile - core, 0.0, 1.0)
        result = result * (1 - profile) + rim * (mean + offset) + core * (mean - 0.6 * offset)
    else:
        noise = ndimage.gaussian_filter(rng.standard_normal(image.shape), sigma=1.0)
        noise /= max(float(noise.std()), 1e-6)
        result = result + profile * noise * offset
    mask = profile > 0.5
    return result.astype(image.dtype), mask


def _pick_centre(
    foreground: np.ndarray, radius: float, rng: np.random.Generator
) -> tuple[int, int]:
    # Prefer centres a full radius inside the foreground; small foregrounds take any pixel.
    inner = ndimage.binary_erosion(foreground, iterations=max(1, int(radius)))
    candidates = np.argwhere(inner if inner.any() else foreground)
    row, column = candidates[rng.integers(len(candidates))]
    return int(row), int(column)


def _ellipse_profile(
    shape: tuple[int, ...], centre: tuple[int, int], radius: float, rng: np.random.Generator
) -> np.ndarray:
    height, width = shape
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float64)
    angle = rng.uniform(0, np.pi)
    aspect = rng.uniform(0.7, 1.0)
    dy, dx = rows - centre[0], columns - centre[1]
    along = dx * np.cos(angle) + dy * np.sin(angle)
    across = (-dx * np.sin(angle) + dy * np.cos(angle)) / aspect
    distance = np.hypot(along, across)
    return np.clip((radius - distance) / EDGE_WIDTH + 0.5, 0.0, 1.0)


def _shrink(profile: np.ndarray, ratio: float) -> np.ndarray:
    # A profile's inner part: pixels more than (1 - ratio) of the way in.
    peak = max(float(profile.max()), 1e-6)
    distance_inside = ndimage.distance_transform_edt(profile > 0)
    depth = distance_inside.max()
    return np.clip((distance_inside - (1 - ratio) * depth) / EDGE_WIDTH, 0.0, 1.0) * (
        profile / peak
    )
