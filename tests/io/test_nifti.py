"""NIfTI volumes written by the test: pixels and affine round-trip, 4D, slicing planes."""

import gzip
from pathlib import Path

import nibabel
import numpy as np
import pytest

from anogan.errors import ConfigError
from anogan.io import ReadFailure, Series, iter_series

# An LPS-stored, anisotropic, slightly rotated volume: a file that is not RAS+ to begin with.
ANGLE = np.deg2rad(10.0)
AFFINE = np.array(
    [
        [-0.9 * np.cos(ANGLE), 0.0, 0.0, 100.0],
        [-0.9 * np.sin(ANGLE), -1.1, 0.0, 80.0],
        [0.0, 0.0, 2.5, -30.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def _volume(shape: tuple[int, ...]) -> np.ndarray:
    return np.random.default_rng(0).normal(100.0, 20.0, size=shape).astype(np.float32)


def _only_series(path: Path, **options) -> list[Series]:
    results = list(iter_series(path, **options))
    assert not [result for result in results if isinstance(result, ReadFailure)]
    return results


@pytest.mark.parametrize("plane", ["axial", "coronal", "sagittal"])
def test_pixels_and_affine_round_trip(tmp_path: Path, plane: str) -> None:
    volume = _volume((12, 10, 7))
    path = tmp_path / "head.nii.gz"
    nibabel.save(nibabel.Nifti1Image(volume, AFFINE), path)

    (series,) = _only_series(path, slice_axis=plane)
    expected_slices = {"axial": 7, "coronal": 10, "sagittal": 12}[plane]
    assert series.pixels.shape[0] == expected_slices and series.kind == "nifti"
    assert series.sources == ("head.nii.gz",) * expected_slices and series.series_id == "head"

    # The documented contract: transpose + affine is a NIfTI that overlays the input.
    rebuilt = nibabel.Nifti1Image(np.transpose(series.pixels, (2, 1, 0)), series.affine)
    original = nibabel.as_closest_canonical(nibabel.Nifti1Image(volume, AFFINE))
    rebuilt = nibabel.as_closest_canonical(rebuilt)
    np.testing.assert_allclose(rebuilt.affine, original.affine, atol=1e-9)
    np.testing.assert_array_equal(np.asarray(rebuilt.dataobj), np.asarray(original.dataobj))


def test_axial_slices_are_laid_out_like_dicom(tmp_path: Path) -> None:
    path = tmp_path / "ras.nii"
    nibabel.save(nibabel.Nifti1Image(_volume((6, 5, 4)), np.diag([1.0, 2.0, 3.0, 1.0])), path)
    (series,) = _only_series(path)
    # Columns run towards the patient's left (-x), rows towards posterior (-y), as in DICOM.
    np.testing.assert_allclose(series.affine[:3, 0], [-1.0, 0.0, 0.0])
    np.testing.assert_allclose(series.affine[:3, 1], [0.0, -2.0, 0.0])
    np.testing.assert_allclose(series.affine[:3, 2], [0.0, 0.0, 3.0])
    assert series.spacing == (2.0, 1.0)


def test_four_dimensional_file_gives_one_series_per_volume(tmp_path: Path) -> None:
    volume = _volume((8, 8, 5, 3))
    path = tmp_path / "bold.nii"
    image = nibabel.Nifti1Image(volume, AFFINE)
    nibabel.save(image, path)
    series = _only_series(path)
    assert [item.series_id for item in series] == ["bold_v000", "bold_v001", "bold_v002"]
    assert [item.metadata["volume"] for item in series] == ["0", "1", "2"]
    for index, item in enumerate(series):
        rebuilt = nibabel.Nifti1Image(np.transpose(item.pixels, (2, 1, 0)), item.affine)
        original = nibabel.Nifti1Image(volume[..., index], AFFINE)
        np.testing.assert_array_equal(
            nibabel.as_closest_canonical(rebuilt).get_fdata(),
            nibabel.as_closest_canonical(original).get_fdata(),
        )


def test_scaling_is_applied(tmp_path: Path) -> None:
    stored = np.arange(60, dtype=np.int16).reshape(3, 4, 5)
    image = nibabel.Nifti1Image(stored, np.eye(4))
    image.header.set_slope_inter(2.0, -10.0)
    nibabel.save(image, tmp_path / "scaled.nii")
    (series,) = _only_series(tmp_path / "scaled.nii")
    assert series.pixels.min() == -10.0 and series.pixels.max() == 2.0 * 59 - 10.0


def test_broken_files_are_failures_not_tracebacks(tmp_path: Path) -> None:
    nibabel.save(nibabel.Nifti1Image(_volume((8, 8, 8)), np.eye(4)), tmp_path / "good.nii.gz")
    data = (tmp_path / "good.nii.gz").read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.nii").write_bytes(b"not a volume at all")
    (tmp_path / "flat.nii.gz").write_bytes(gzip.compress(b"\0" * 10))
    results = list(iter_series(tmp_path, kind="nifti"))
    failures = {item.source: item.reason for item in results if isinstance(item, ReadFailure)}
    assert sorted(failures) == ["cut.nii.gz", "flat.nii.gz", "text.nii"]
    assert [item.series_id for item in results if isinstance(item, Series)] == ["good"]


def test_unknown_slice_axis_is_a_config_error(tmp_path: Path) -> None:
    nibabel.save(nibabel.Nifti1Image(_volume((4, 4, 4)), np.eye(4)), tmp_path / "v.nii")
    with pytest.raises(ConfigError, match=r"data\.slice_axis.*axial, coronal, sagittal"):
        next(iter_series(tmp_path / "v.nii", slice_axis="transverse"))
