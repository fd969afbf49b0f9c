"""`iter_series`, the one entry point to the readers: a path in, Series (or failures) out.

What a path holds is worked out from the path itself unless `kind` says: a folder is walked
once and its NIfTI volumes, images and DICOM files are each read by their reader; a file is
read by the reader its suffix names (.nii and .nii.gz NIfTI; .png, .jpg, .jpeg, .tif, .tiff
and .csv manifests images; anything else DICOM, whatever its name).
"""

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

from anogan.errors import ImageReadError
from anogan.io.dicom import iter_dicom
from anogan.io.nifti import iter_nifti, plane_name
from anogan.io.raster import IMAGE_SUFFIXES, iter_images
from anogan.io.series import ReadFailure, Series, relative_source
from anogan.io.windows import preset_window

logger = logging.getLogger(__name__)

ReaderKind = Literal["auto", "dicom", "nifti", "image", "images"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")
MANIFEST_SUFFIX = ".csv"


def iter_series(
    path: str | Path,
    kind: ReaderKind = "auto",
    window: str | None = None,
    slice_axis: str = "axial",
    root: Path | None = None,
    select: Callable[[str], bool] | None = None,
) -> Iterator[Series | ReadFailure]:
    """Read everything under `path`, one Series at a time.

    Args:
        path: a DICOM folder tree or file, a NIfTI file, an image file, a folder of images or
            volumes, or a manifest CSV of images (a `path` column).
        kind: the reader to use; `auto` decides per file as the module docstring says.
        window: DICOM window preset (brain, subdural, lung, soft_tissue, bone), or None for
            each file's own window.
        slice_axis: NIfTI slicing plane after reorientation to RAS+: axial, coronal, sagittal.
        root: folder that Series.sources and ReadFailure.source are relative to; default
            `path` for a folder, its parent for a file.
        select: called once per item, in reading order and before the item is decoded, with
            its key: the source of an image or NIfTI file, the SeriesInstanceUID of a DICOM
            series, the source of a DICOM file whose header is unreadable. Items for which it
            returns False are skipped (see `anogan.scoring.shard`); None reads everything.

    Yields:
        For DICOM one Series per series found; for NIfTI one per volume (a 4D file gives one
        per index of its fourth axis); for images one per image file. A ReadFailure for each
        file or series that could not be read, so that one bad file never stops the others.

    Raises:
        ConfigError: `window` or `slice_axis` is not a known name.
        ImageReadError: `path` does not exist.
    """
    path = Path(path)
    if window is not None:
        preset_window(window)
    plane_name(slice_axis)
    if not path.exists():
        raise ImageReadError(str(path), "no such file or folder")
    base = Path(root) if root is not None else (path if path.is_dir() else path.parent)

    if kind in ("image", "images"):
        yield from iter_images(path, base, select=select)
    elif kind == "dicom":
        yield from iter_dicom(path, window, base, select=select)
    elif kind == "nifti":
        files = _files_under(path) if path.is_dir() else [path]
        yield from _nifti_results(
            [file for file in files if _is_nifti(file) or path.is_file()], slice_axis, base, select
        )
    elif path.is_file():
        yield from _read_file(path, window, slice_axis, base, select)
    else:
        yield from _read_folder(path, window, slice_axis, base, select)


def _read_file(
    path: Path,
    window: str | None,
    slice_axis: str,
    base: Path,
    select: Callable[[str], bool] | None,
) -> Iterator[Series | ReadFailure]:
    if _is_nifti(path):
        yield from _nifti_results([path], slice_axis, base, select)
    elif path.name.lower().endswith((*IMAGE_SUFFIXES, MANIFEST_SUFFIX)):
        yield from iter_images(path, base, select=select)
    else:
        yield from iter_dicom(path, window, base, select=select)


def _read_folder(
    path: Path,
    window: str | None,
    slice_axis: str,
    base: Path,
    select: Callable[[str], bool] | None,
) -> Iterator[Series | ReadFailure]:
    files = _files_under(path)
    images = [file for file in files if file.name.lower().endswith(IMAGE_SUFFIXES)]
    volumes = [file for file in files if _is_nifti(file)]
    others = [file for file in files if file not in set(images) | set(volumes)]
    logger.debug(
        "%s: %d images, %d NIfTI files, %d other files",
        path,
        len(images),
        len(volumes),
        len(others),
    )
    for image in images:
        yield from iter_images(image, base, select=select)
    yield from _nifti_results(volumes, slice_axis, base, select)
    if others:
        yield from iter_dicom(path, window, base, files=others, select=select)


def _nifti_results(
    files: list[Path], slice_axis: str, base: Path, select: Callable[[str], bool] | None
) -> Iterator[Series | ReadFailure]:
    for file in files:
        if select is not None and not select(relative_source(file, base)):
            continue
        try:
            yield from iter_nifti(file, slice_axis, base)
        except ImageReadError as error:
            yield ReadFailure(error.source, error.reason)


def _files_under(folder: Path) -> list[Path]:
    return sorted(item for item in folder.rglob("*") if item.is_file())


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith(NIFTI_SUFFIXES)
