"""Read the items of a data set into model-ready slices, kept in memory.

Each item is read through `anogan.io`, prepared by `anogan.data.preprocess` (model grid,
foreground mask, intensities in [-1, 1]) and padded with air to one common shape, so a whole
split is one tensor. An item that cannot be read is reported and skipped, never fatal, unless
nothing at all is left.
"""

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from anogan.config import DataConfig
from anogan.data.lesions import LesionKind, insert_lesion
from anogan.data.preprocess import AIR_VALUE, foreground_mask, prepare_slices, to_model_grid
from anogan.data.sources import DataItem
from anogan.errors import AnoganError, DataError, ImageReadError
from anogan.io.raster import read_image
from anogan.io.series import Series

logger = logging.getLogger(__name__)

MIN_FOREGROUND_FRACTION = 0.05  # volume slices with less body than this are not training data


@dataclass
class SliceSet:
    """Prepared slices of one split, with their labels and raw-intensity statistics.

    Attributes:
        images: (N, 1, H, W) in [-1, 1], air -1.
        masks: (N, 1, H, W) in {0, 1}, the foreground.
        labels: (N,) int64, 0 healthy, 1 anomalous.
        subtypes: N finer labels.
        sources: N file names (with the slice index for volumes).
        raw_statistics: per-slice `std`, `mean` and `p99` of the input's own intensities, the
            trivial baselines a model must beat.
        lesion_masks: (N, 1, H, W) in {0, 1} where the data has masks, else None; slices of
            items without a mask are all zero and listed in `has_lesion_mask` as False.
        has_lesion_mask: (N,) bool.
        item_index: (N,) int64, the position in the list of items read of each slice's item.
        failures: (source, reason) of every item that could not be read.
    """

    images: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    subtypes: list[str]
    sources: list[str]
    raw_statistics: dict[str, np.ndarray]
    lesion_masks: torch.Tensor | None
    has_lesion_mask: torch.Tensor
    item_index: np.ndarray
    failures: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def load_slices(
    items: Sequence[DataItem],
    config: DataConfig,
    description: str,
    drop_empty: bool = False,
    limit: int = 0,
) -> SliceSet:
    """Read, prepare and stack every slice of `items`.

    Args:
        items: what to read.
        config: model grid and normalisation.
        description: names the split in the progress bar and errors.
        drop_empty: leave out slices with less than MIN_FOREGROUND_FRACTION foreground
            (the empty ends of a volume), for training.
        limit: read at most this many items (0: all).

    Raises:
        DataError: not a single slice could be read.
    """
    items = list(items)[:limit] if limit else list(items)
    return _read_parts(
        items,
        config,
        description,
        lambda series, item: [_prepare(series, item, config, drop_empty)],
    )


def _read_parts(
    items: Sequence[DataItem],
    config: DataConfig,
    description: str,
    prepare: Callable[[Series, DataItem], list[dict]],
) -> SliceSet:
    """Read every item, turn each of its series into parts with `prepare`, and stack them.

    An item that cannot be read is logged and listed in `failures`, never fatal.
    """
    parts: list[dict] = []
    failures: list[tuple[str, str]] = []
    for index, item in enumerate(
        tqdm(items, desc=f"Reading {description}", unit="file", mininterval=2)
    ):
        try:
            for series in read_item(item, config):
                parts.extend({**part, "item": index} for part in prepare(series, item))
        except AnoganError as error:
            failures.append((str(item.path), str(error)))
            logger.warning("Skipped %s: %s", item.path, error)
    parts = [part for part in parts if part["images"].shape[0] > 0]
    if not parts:
        raise DataError(f"{description}: none of {len(items)} inputs gave a usable slice")
    return _stack(parts, failures)


def read_item(item: DataItem, config: DataConfig) -> Iterator[Series]:
    """The series of one item, read through `anogan.io`; a failed file raises."""
    if item.kind == "image":
        yield read_image(item.path)
        return
    from anogan.io import iter_series, ReadFailure  # noqa: I001 (readers of volumes)

    results = iter_series(item.path, item.kind, window=config.window, slice_axis=config.slice_axis)
    for result in results:
        if isinstance(result, ReadFailure):
            if item.path.is_file():  # the item itself failed: count it as a failed input
                raise ImageReadError(result.source, result.reason)
            logger.warning("Skipped %s: %s", result.source, result.reason)
            continue
        yield result


def _prepare(series: Series, item: DataItem, config: DataConfig, drop_empty: bool) -> dict:
    prepared = prepare_slices(series.pixels, series.spacing, config, series.window)
    keep = torch.ones(series.num_slices, dtype=torch.bool)
    if drop_empty:
        keep = prepared.foreground_fraction >= MIN_FOREGROUND_FRACTION
    count = int(keep.sum())
    lesion = None
    if item.mask is not None:
        mask_pixels = read_image(item.mask).pixels
        grid, _ = to_model_grid(mask_pixels, series.spacing, config.image_size, config.patch_size)
        lesion = torch.from_numpy(grid > 0.5 * max(float(grid.max()), 1e-6)).float()[:, None]
    multi = series.num_slices > 1
    return {
        "images": prepared.images[keep],
        "masks": prepared.masks[keep],
        "lesion": lesion[keep] if lesion is not None else None,
        "labels": [item.label] * count,
        "subtypes": [item.subtype] * count,
        "sources": [
            f"{series.sources[index]}#{index}" if multi else series.sources[index]
            for index in np.flatnonzero(keep.numpy())
        ],
        "raw": _raw_statistics(series.pixels[keep.numpy()]),
    }


def load_lesioned_slices(
    items: Sequence[DataItem],
    config: DataConfig,
    kinds: Sequence[LesionKind],
    radii: Sequence[float],
    seed: int,
    description: str = "lesioned slices",
) -> SliceSet:
    """Healthy items with synthetic lesions of known masks, for localisation figures.

    Each slice of each item is copied once per (kind, radius) and one lesion is inserted into
    the copy on the input's own grid, before resampling and normalisation, so that the lesion
    goes through the same preparation as a real one would. The copies are labelled 1 with
    subtype `kind-radius`, and their lesion masks are put on the model grid.

    Args:
        items: healthy inputs the model never trained on.
        config: model grid and normalisation.
        kinds: lesion kinds of `anogan.data.lesions`.
        radii: lesion radii as fractions of a slice's longer side.
        seed: fixes every lesion's place, shape and texture.
        description: names the set in the progress bar and errors.

    Raises:
        DataError: not a single slice could be read.
    """
    rng = np.random.default_rng(seed)
    return _read_parts(
        items,
        config,
        description,
        lambda series, item: [
            _lesioned(series, item, config, kind, radius, rng) for kind in kinds for radius in radii
        ],
    )


def _lesioned(
    series: Series,
    item: DataItem,
    config: DataConfig,
    kind: LesionKind,
    radius: float,
    rng: np.random.Generator,
) -> dict:
    pixels = np.array(series.pixels, dtype=np.float32)  # (S, H, W), a copy
    if series.window is not None:
        pixels = np.clip(pixels, *series.window)
    lesion_masks = np.zeros(pixels.shape, dtype=np.float32)
    keep = []
    for index, image in enumerate(pixels):
        foreground = foreground_mask(image, config.foreground_threshold)
        keep.append(bool(foreground.mean() >= MIN_FOREGROUND_FRACTION))
        if not keep[-1]:
            continue
        size = radius * max(image.shape)
        pixels[index], lesion = insert_lesion(image, foreground, kind, size, rng)
        lesion_masks[index] = lesion
    keep_array = np.array(keep)
    prepared = prepare_slices(pixels[keep_array], series.spacing, config)
    grid, _ = to_model_grid(
        lesion_masks[keep_array], series.spacing, config.image_size, config.patch_size
    )
    count = int(keep_array.sum())
    subtype = f"{kind}-{radius:g}"
    return {
        "images": prepared.images,
        "masks": prepared.masks,
        "lesion": torch.from_numpy(grid > 0.5).float()[:, None] * prepared.masks,
        "labels": [1] * count,
        "subtypes": [subtype] * count,
        "sources": [
            f"{series.sources[index]}#{index}-{subtype}" for index in np.flatnonzero(keep_array)
        ],
        "raw": _raw_statistics(pixels[keep_array]),
    }


def _raw_statistics(pixels: np.ndarray) -> dict[str, np.ndarray]:
    flat = pixels.reshape(pixels.shape[0], -1).astype(np.float64)  # (S, H*W)
    return {
        "std": flat.std(axis=1),
        "mean": flat.mean(axis=1),
        "p99": np.percentile(flat, 99, axis=1),
    }


def _stack(parts: list[dict], failures: list[tuple[str, str]]) -> SliceSet:
    height = max(part["images"].shape[2] for part in parts)
    width = max(part["images"].shape[3] for part in parts)
    any_lesion = any(part["lesion"] is not None for part in parts)
    images, masks, lesions, has_lesion = [], [], [], []
    for part in parts:
        images.append(_pad(part["images"], height, width, AIR_VALUE))
        masks.append(_pad(part["masks"], height, width, 0.0))
        count = part["images"].shape[0]
        lesion = part["lesion"]
        has_lesion.append(torch.full((count,), lesion is not None))
        if any_lesion:
            lesion = lesion if lesion is not None else torch.zeros_like(part["masks"])
            lesions.append(_pad(lesion, height, width, 0.0))
    raw = {
        name: np.concatenate([part["raw"][name] for part in parts])
        for name in ("std", "mean", "p99")
    }
    return SliceSet(
        images=torch.cat(images),
        masks=torch.cat(masks),
        labels=torch.tensor([label for part in parts for label in part["labels"]]),
        subtypes=[subtype for part in parts for subtype in part["subtypes"]],
        sources=[source for part in parts for source in part["sources"]],
        raw_statistics=raw,
        lesion_masks=torch.cat(lesions) if any_lesion else None,
        has_lesion_mask=torch.cat(has_lesion),
        item_index=np.concatenate(
            [np.full(part["images"].shape[0], part["item"], dtype=np.int64) for part in parts]
        ),
        failures=failures,
    )


def _pad(tensor: torch.Tensor, height: int, width: int, value: float) -> torch.Tensor:
    """Pad (S, 1, h, w) to (S, 1, height, width), centred."""
    extra_height, extra_width = height - tensor.shape[2], width - tensor.shape[3]
    if extra_height == 0 and extra_width == 0:
        return tensor
    top, left = extra_height // 2, extra_width // 2
    padding = (left, extra_width - left, top, extra_height - top)
    return F.pad(tensor, padding, value=value)
