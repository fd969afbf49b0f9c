"""PNG, JPEG and TIFF images as Series: single files, folders of them, or manifest CSVs.

Each image file is one Series; a multi-page TIFF gives one slice per page. Grey images keep
their stored intensities (8 or 16 bit); colour images whose channels agree are read as grey,
and colour images with real colour become grey by luminance, with a warning. Images carry no
pixel spacing, so spacing is (1.0, 1.0) and the affine is the DICOM default orientation
(columns towards the patient's left, rows towards posterior), written in RAS+.
"""

import csv
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence, UnidentifiedImageError

from anogan.errors import ImageReadError
from anogan.io.series import ReadFailure, Series, error_summary, relative_source, safe_filename

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
MANIFEST_PATH_COLUMN = "path"  # the column of a manifest CSV naming image files
GREY_TOLERANCE = 2.0  # grey levels by which channels of a "grey" colour image may differ
MAX_IMAGE_PIXELS = 2**28  # larger images are refused rather than decoded (decompression bombs)

# PIL raises these for files that are not images or are damaged.
_PIL_ERRORS = (
    OSError,
    UnidentifiedImageError,
    ValueError,
    SyntaxError,
    Image.DecompressionBombError,
)


def read_image(path: str | Path, root: str | Path | None = None) -> Series:
    """One image file as a Series of one slice (or one per page of a multi-page TIFF).

    Args:
        path: a PNG, JPEG or TIFF file.
        root: folder the source is given relative to; default the file's folder.

    Returns:
        Series with pixels (S, H, W) float32 in the stored grey levels.

    Raises:
        ImageReadError: not a readable image, or pages of different sizes.
    """
    path = Path(path)
    source = relative_source(path, Path(root) if root is not None else None)
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise ImageReadError(
                    source,
                    f"image of {image.width}x{image.height} pixels is larger than the "
                    f"{MAX_IMAGE_PIXELS} pixels anogan reads",
                )
            pages = [_grey(page, source) for page in ImageSequence.Iterator(image)]
    except _PIL_ERRORS as error:
        raise ImageReadError(source, f"not a readable image ({error_summary(error)})") from None
    shapes = sorted({page.shape for page in pages})
    if len(shapes) > 1:
        raise ImageReadError(
            source, f"pages of different sizes in one file: {shapes}; expected one size"
        )
    pixels = np.stack(pages)  # (S, H, W)
    return Series(
        pixels=pixels,
        spacing=(1.0, 1.0),
        affine=np.diag([-1.0, -1.0, 1.0, 1.0]),
        series_id=safe_filename(source),
        sources=(source,) * pixels.shape[0],
        kind="image",
    )


def iter_images(
    path: str | Path,
    root: Path | None = None,
    select: Callable[[str], bool] | None = None,
) -> Iterator[Series | ReadFailure]:
    """Every image of a file, a folder tree, or a manifest CSV (a `path` column).

    Args:
        path: an image file, a folder (searched recursively for IMAGE_SUFFIXES), or a CSV
            whose `path` column names images relative to the CSV's folder.
        root: folder sources are given relative to; default the folder itself (for a folder),
            the CSV's folder (for a manifest) or the file's folder.
        select: called with each image's source before it is read; False skips the image.

    Yields:
        One Series per readable image, a ReadFailure for each that is not.

    Raises:
        ImageReadError: a manifest CSV without a `path` column, or nothing to read.
    """
    path = Path(path)
    if path.is_dir():
        base = root if root is not None else path
        files = sorted(item for item in path.rglob("*") if item.is_file() and _is_image_name(item))
    elif path.suffix.lower() == ".csv":
        base = root if root is not None else path.parent
        files = _manifest_files(path)
    else:
        base = root if root is not None else path.parent
        files = [path]
    for file in files:
        if select is not None and not select(relative_source(file, base)):
            continue
        try:
            yield read_image(file, base)
        except ImageReadError as error:
            yield ReadFailure(error.source, error.reason)


def _grey(page: Image.Image, source: str) -> np.ndarray:
    """(H, W) float32 grey levels of one PIL page."""
    if page.mode in ("I;16", "I;16B", "I;16L", "I", "F", "L"):
        return np.asarray(page, dtype=np.float32)
    if page.mode in ("LA", "PA"):
        return np.asarray(page.convert("L"), dtype=np.float32)
    colour = np.asarray(page.convert("RGB"), dtype=np.float32)  # (H, W, 3)
    spread = float(np.max(colour.max(axis=2) - colour.min(axis=2))) if colour.size else 0.0
    if spread > GREY_TOLERANCE:
        logger.warning("%s: colour image converted to grey by luminance", source)
    red, green, blue = colour[..., 0], colour[..., 1], colour[..., 2]
    return (0.299 * red + 0.587 * green + 0.114 * blue).astype(np.float32)


def _manifest_files(manifest: Path) -> list[Path]:
    try:
        with manifest.open(newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or MANIFEST_PATH_COLUMN not in reader.fieldnames:
                raise ImageReadError(
                    manifest.name,
                    f"manifest has no {MANIFEST_PATH_COLUMN!r} column; columns found: "
                    f"{reader.fieldnames or []}",
                )
            names = [row[MANIFEST_PATH_COLUMN] for row in reader if row[MANIFEST_PATH_COLUMN]]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise ImageReadError(
            manifest.name, f"unreadable manifest ({error_summary(error)})"
        ) from None
    return [manifest.parent / name for name in names]


def _is_image_name(path: Path) -> bool:
    return path.name.lower().endswith(IMAGE_SUFFIXES)
