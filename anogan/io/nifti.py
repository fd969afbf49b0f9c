"""NIfTI volumes (.nii, .nii.gz) as Series, keeping the affine so that maps line up.

A volume is first reoriented to RAS+ (the axis order and signs nearest to the file's own), then
cut into slices along `slice_axis`. Slices are laid out as a radiologist reads them, the way
DICOM scanners store them: axial and coronal slices with the patient's right on the left of
the image, axial slices with anterior at the top, coronal and sagittal slices with superior
at the top. The Series affine maps (column, row, slice) to RAS+ world millimetres, so
`np.transpose(pixels, (2, 1, 0))` with it is a NIfTI volume that overlays the input.

A 4D file gives one Series per volume along the fourth axis, read one at a time.
"""

import logging
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import nibabel
import numpy as np
from nibabel.filebasedimages import ImageFileError
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

from anogan.errors import ConfigError, ImageReadError
from anogan.io.series import Series, error_summary, relative_source, safe_filename

logger = logging.getLogger(__name__)

SliceAxis = Literal["axial", "coronal", "sagittal"]

# For each plane, the RAS+ array axes of (column, row, slice); column and row run against the
# RAS+ direction (towards the patient's left or posterior, and downwards), slices along it.
_PLANE_AXES: dict[str, tuple[int, int, int]] = {
    "axial": (0, 1, 2),
    "coronal": (0, 2, 1),
    "sagittal": (1, 2, 0),
}

# NOTE: nibabel reports broken files through these: a bad header (ImageFileError, ValueError),
# a truncated or corrupt gzip stream (EOFError, zlib.error, OSError).
_NIBABEL_ERRORS = (ImageFileError, ValueError, EOFError, OSError, zlib.error)


def iter_nifti(
    path: str | Path, slice_axis: str = "axial", root: Path | None = None
) -> Iterator[Series]:
    """The volumes of one NIfTI file, each as a Series of slices along `slice_axis`.

    Args:
        path: a .nii or .nii.gz file.
        slice_axis: `axial`, `coronal` or `sagittal`, taken after reorientation to RAS+.
        root: folder the Series sources are given relative to; default the file's folder.

    Yields:
        One Series per volume: pixels (S, H, W) float32 with the file's scaling applied.

    Raises:
        ConfigError: `slice_axis` is not one of the three planes.
        ImageReadError: the file is not a readable NIfTI volume of 3 or 4 dimensions.
    """
    path = Path(path)
    plane = plane_name(slice_axis)
    source = relative_source(path, root)
    try:
        image = nibabel.load(path)
        shape = tuple(int(size) for size in image.shape)
        affine = np.asarray(image.affine, dtype=np.float64)
    except _NIBABEL_ERRORS as error:
        raise ImageReadError(
            source, f"not a readable NIfTI file ({error_summary(error)})"
        ) from None

    volumes = _volume_count(shape, source)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ImageReadError(source, "NIfTI affine is singular or not finite; cannot orient it")
    orientation = io_orientation(affine)
    stem = safe_filename(_stem(path))
    for index in range(volumes):
        try:
            data = np.asarray(image.dataobj[..., index] if volumes > 1 else image.dataobj)
            data = data.reshape(shape[:3])
        except _NIBABEL_ERRORS as error:
            raise ImageReadError(
                source, f"cannot read the voxels of volume {index} ({error_summary(error)})"
            ) from None
        canonical = apply_orientation(data.astype(np.float32, copy=False), orientation)
        canonical_affine = affine @ inv_ornt_aff(orientation, data.shape)
        pixels, slice_affine = _slices(canonical, canonical_affine, plane)
        metadata = {"orientation": plane}
        if volumes > 1:
            metadata["volume"] = str(index)
        yield Series(
            pixels=pixels,
            spacing=_pixel_spacing(slice_affine),
            affine=slice_affine,
            series_id=f"{stem}_v{index:03d}" if volumes > 1 else stem,
            sources=(source,) * pixels.shape[0],
            kind="nifti",
            metadata=metadata,
        )


def plane_name(slice_axis: str) -> str:
    """The checked plane name (`axial`, `coronal`, `sagittal`) of a `data.slice_axis` value."""
    plane = str(slice_axis).strip().lower()
    if plane not in _PLANE_AXES:
        raise ConfigError(
            f"config key 'data.slice_axis': expected one of {', '.join(_PLANE_AXES)}, "
            f"got {slice_axis!r}"
        )
    return plane


def _volume_count(shape: tuple[int, ...], source: str) -> int:
    # Trailing singleton axes (a 3D volume stored as X, Y, Z, 1) do not make it 4D.
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) not in (3, 4) or min(shape) < 1:
        raise ImageReadError(
            source, f"expected a 3D or 4D NIfTI volume, got shape {shape}; 2D or 5D+ unsupported"
        )
    return shape[3] if len(shape) == 4 else 1


def _slices(volume: np.ndarray, affine: np.ndarray, plane: str) -> tuple[np.ndarray, np.ndarray]:
    """Cut a RAS+ (X, Y, Z) volume into (S, H, W) slices and give their voxel-to-world affine."""
    column_axis, row_axis, slice_axis = _PLANE_AXES[plane]
    # (S, H, W): slices, then rows, then columns; rows and columns reversed against RAS+.
    pixels = np.transpose(volume, (slice_axis, row_axis, column_axis))[:, ::-1, ::-1]
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)

    # Voxel (column, row, slice) -> canonical voxel index, then the canonical affine.
    sizes = volume.shape
    index_map = np.zeros((4, 4))
    index_map[column_axis, 0] = -1.0
    index_map[column_axis, 3] = sizes[column_axis] - 1
    index_map[row_axis, 1] = -1.0
    index_map[row_axis, 3] = sizes[row_axis] - 1
    index_map[slice_axis, 2] = 1.0
    index_map[3, 3] = 1.0
    return pixels, affine @ index_map


def _pixel_spacing(affine: np.ndarray) -> tuple[float, float]:
    """(row, column) spacing in mm: the lengths of the affine's row and column steps."""
    column_step = float(np.linalg.norm(affine[:3, 0]))
    row_step = float(np.linalg.norm(affine[:3, 1]))
    return row_step, column_step


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem
