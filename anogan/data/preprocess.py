"""From a Series' pixels to model inputs: model grid, foreground mask, intensities in [-1, 1].

The steps, in order: clip to an intensity window (CT), resample each slice to square pixels
(using the pixel spacing where known) with its longer side at `image_size`, pad to at least
one model window, find the foreground (body versus air), and normalise intensities per slice.
`GridTransform` remembers the resampling so that anomaly maps go back onto the input's grid.
"""

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from anogan.config import DataConfig

logger = logging.getLogger(__name__)

AIR_VALUE = -1.0  # intensity given to everything outside the foreground
ROBUST_PERCENTILES = (1.0, 99.0)  # robust intensity range of a slice
MIN_FOREGROUND_PIXELS = 16  # a smaller foreground is treated as none


@dataclass(frozen=True)
class GridTransform:
    """How slices of `original_shape` were put on the model grid.

    Attributes:
        original_shape: (H, W) of the input slices.
        resized_shape: (h, w) after resampling, before padding.
        padded_shape: (h', w') after padding to at least one window.
        offset: (top, left) of the resized slice inside the padded one.
    """

    original_shape: tuple[int, int]
    resized_shape: tuple[int, int]
    padded_shape: tuple[int, int]
    offset: tuple[int, int]


@dataclass(frozen=True)
class PreparedSlices:
    """Model-ready slices of one series.

    Attributes:
        images: (S, 1, h', w') float32 in [-1, 1], air at -1.
        masks: (S, 1, h', w') float32 in {0, 1}, the foreground.
        transform: the resampling, to map results back to the input grid.
    """

    images: torch.Tensor
    masks: torch.Tensor
    transform: GridTransform

    @property
    def foreground_fraction(self) -> torch.Tensor:
        """(S,) share of each slice's resized area that is foreground."""
        height, width = self.transform.resized_shape
        return self.masks.sum(dim=(1, 2, 3)) / float(height * width)


def prepare_slices(
    pixels: np.ndarray,
    spacing: tuple[float, float],
    config: DataConfig,
    bounds: tuple[float, float] | None = None,
) -> PreparedSlices:
    """Resample, mask and normalise a stack of slices.

    Args:
        pixels: (S, H, W) float32 in the reader's units.
        spacing: (row, column) pixel spacing in mm.
        config: image size, window size and normalisation.
        bounds: optional (low, high) intensity window applied first (CT in HU).

    Returns:
        PreparedSlices on a grid of at least `config.patch_size` per side.
    """
    volume = np.asarray(pixels, dtype=np.float32)
    if bounds is not None:
        volume = np.clip(volume, bounds[0], bounds[1])
    grid, transform = to_model_grid(volume, spacing, config.image_size, config.patch_size)

    masks = np.stack([foreground_mask(image, config.foreground_threshold) for image in grid])
    images = np.stack(
        [
            normalise_intensity(image, mask, config.intensity, config.zscore_clip)
            for image, mask in zip(grid, masks, strict=True)
        ]
    )
    return PreparedSlices(
        images=torch.from_numpy(images).unsqueeze(1),
        masks=torch.from_numpy(masks.astype(np.float32)).unsqueeze(1),
        transform=transform,
    )


def to_model_grid(
    pixels: np.ndarray, spacing: tuple[float, float], image_size: int, min_size: int
) -> tuple[np.ndarray, GridTransform]:
    """Resample (S, H, W) slices to square pixels, longer side `image_size`, padded.

    Args:
        pixels: (S, H, W) float32.
        spacing: (row, column) pixel spacing in mm; anisotropic pixels are made square.
        image_size: the longer side after resampling.
        min_size: each side is padded (with the slice's minimum) to at least this.

    Returns:
        (S, h', w') float32 and the GridTransform that undoes it.
    """
    slices, height, width = pixels.shape
    row_spacing, column_spacing = (float(value) if value > 0 else 1.0 for value in spacing)
    physical_height, physical_width = height * row_spacing, width * column_spacing
    scale = image_size / max(physical_height, physical_width)
    resized = (max(1, round(physical_height * scale)), max(1, round(physical_width * scale)))

    tensor = torch.from_numpy(np.ascontiguousarray(pixels)).unsqueeze(1)  # (S, 1, H, W)
    if resized != (height, width):
        tensor = F.interpolate(tensor, size=resized, mode="bilinear", antialias=True)
    padded = (max(resized[0], min_size), max(resized[1], min_size))
    offset = ((padded[0] - resized[0]) // 2, (padded[1] - resized[1]) // 2)
    if padded != resized:
        fill = tensor.amin(dim=(1, 2, 3), keepdim=True)
        canvas = fill.expand(slices, 1, *padded).clone()  # (S, 1, h', w')
        canvas[:, :, offset[0] : offset[0] + resized[0], offset[1] : offset[1] + resized[1]] = (
            tensor
        )
        tensor = canvas
    transform = GridTransform((height, width), resized, padded, offset)
    return tensor.squeeze(1).numpy(), transform


def from_model_grid(maps: torch.Tensor, transform: GridTransform) -> torch.Tensor:
    """Put (S, 1, h', w') maps back on the input grid: crop the padding, resample.

    Returns:
        (S, 1, H, W) on the grid of the slices given to `to_model_grid`.
    """
    top, left = transform.offset
    height, width = transform.resized_shape
    cropped = maps[:, :, top : top + height, left : left + width]
    if transform.original_shape == transform.resized_shape:
        return cropped
    return F.interpolate(cropped, size=transform.original_shape, mode="bilinear")


def foreground_mask(image: np.ndarray, threshold: float) -> np.ndarray:
    """Body versus air on one slice.

    Pixels above `threshold` of the robust range (1st-99th percentile) count as body; holes
    are filled and only the largest connected component is kept, so noise in the air and
    labels burnt into the corners drop out.

    Args:
        image: (H, W) float.
        threshold: fraction of the robust range.

    Returns:
        (H, W) bool; all False when the slice is empty.
    """
    low, high = np.percentile(image, ROBUST_PERCENTILES)
    if high - low <= 1e-6:
        return np.zeros(image.shape, dtype=bool)
    mask = image > low + threshold * (high - low)
    mask = ndimage.binary_opening(mask, iterations=1)
    labels, count = ndimage.label(mask)
    if count == 0:
        return np.zeros(image.shape, dtype=bool)
    sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
    mask = labels == (int(np.argmax(sizes)) + 1)
    mask = ndimage.binary_fill_holes(mask)
    if mask.sum() < MIN_FOREGROUND_PIXELS:
        return np.zeros(image.shape, dtype=bool)
    return mask


def normalise_intensity(
    image: np.ndarray, mask: np.ndarray, mode: str, zscore_clip: float
) -> np.ndarray:
    """Map one slice to [-1, 1], statistics taken over its foreground, air set to -1.

    NOTE: per-slice standardisation over the foreground is what keeps the residual from
    measuring contrast: without it, darker and smoother scans reconstruct with smaller
    residuals and score as healthier, whatever they show.

    Args:
        image: (H, W) float.
        mask: (H, W) bool foreground; an empty mask uses the whole slice.
        mode: `zscore`, `percentile` or `minmax`.
        zscore_clip: standard deviations mapped to +-1 by `zscore`.

    Returns:
        (H, W) float32 in [-1, 1].
    """
    region = image[mask] if mask.any() else image.ravel()
    if mode == "zscore":
        scaled = (image - region.mean()) / (max(float(region.std()), 1e-6) * zscore_clip)
    else:
        if mode == "percentile":
            low, high = np.percentile(region, ROBUST_PERCENTILES)
        else:
            low, high = float(region.min()), float(region.max())
        scaled = 2.0 * (image - low) / max(float(high - low), 1e-6) - 1.0
    scaled = np.clip(scaled, -1.0, 1.0)
    if mask.any():
        scaled = np.where(mask, scaled, AIR_VALUE)
    return scaled.astype(np.float32)
