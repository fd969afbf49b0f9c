"""DICOM series written by the test: grouping, order, HU, geometry, windows and failures."""

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from pydicom.data import get_testdata_file

from anogan.errors import ConfigError, ImageReadError
from anogan.io import ReadFailure, Series, iter_series, read_dicom_file
from tests.io.dicom_files import (
    COLUMN_SPACING,
    ORIGIN,
    ROW_SPACING,
    hounsfield_slices,
    write_ct_slice,
    write_multiframe_ct,
    write_secondary_capture_rgb,
)

SERIES_A = "1.2.826.0.1.3680043.8.498.100"
SERIES_B = "1.2.826.0.1.3680043.8.498.200"


def _results(folder: Path, **options) -> tuple[dict[str, Series], list[ReadFailure]]:
    series, failures = {}, []
    for result in iter_series(folder, **options):
        if isinstance(result, ReadFailure):
            failures.append(result)
        else:
            series[result.metadata["SeriesInstanceUID"]] = result
    return series, failures


@pytest.fixture
def mixed_folder(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """Two CT series shuffled into one tree under random names, plus a text file."""
    folder = tmp_path / "export"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(3)
    volume_a = hounsfield_slices(7, 32, 40, seed=1)
    volume_b = hounsfield_slices(4, 24, 24, seed=2)
    names = [f"{value:08x}" for value in rng.permutation(1000)[:11]]
    z_order = rng.permutation(7)  # instance numbers deliberately disagree with position
    for index in range(7):
        name = names[index] + (".dcm" if index % 2 else "")
        target = folder / ("sub" if index % 3 == 0 else "") / name
        write_ct_slice(target, volume_a[index], 5.0 * index - 10, int(z_order[index]), SERIES_A)
    for index in range(4):
        write_ct_slice(
            folder / names[7 + index], volume_b[index], 3.0 * index, index + 1, SERIES_B, slope=0.5
        )
    (folder / "README.txt").write_text("not an image\n")
    return folder, volume_a, volume_b


def test_two_series_in_one_folder_are_grouped_ordered_and_in_hu(mixed_folder, caplog) -> None:
    folder, volume_a, volume_b = mixed_folder
    with caplog.at_level(logging.DEBUG, logger="anogan.io.dicom"):
        series, failures = _results(folder)

    assert failures == []
    assert sorted(series) == [SERIES_A, SERIES_B]
    assert "README.txt" in caplog.text  # skipped with a DEBUG line
    first = series[SERIES_A]
    assert first.pixels.shape == (7, 32, 40) and first.pixels.dtype == np.float32
    np.testing.assert_array_equal(first.pixels, volume_a)  # ordered by z, rescaled to HU
    np.testing.assert_array_equal(series[SERIES_B].pixels, volume_b)  # slope 0.5
    assert first.spacing == (ROW_SPACING, COLUMN_SPACING)
    assert all(not source.startswith("/") for source in first.sources)
    assert len(set(first.sources)) == 7 and len(set(first.instance_uids)) == 7
    assert first.frame_numbers == (1,) * 7
    assert first.kind == "dicom" and first.series_id == SERIES_A
    assert first.metadata["Modality"] == "CT" and first.metadata["orientation"] == "axial"
    assert first.metadata["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.2"


def test_affine_maps_voxels_to_ras_world(mixed_folder) -> None:
    folder, _, _ = mixed_folder
    series, _ = _results(folder)
    affine = series[SERIES_A].affine
    # Voxel (column 2, row 3, slice 4): LPS (x0 + 2 * 0.8, y0 + 3 * 0.7, -10 + 4 * 5).
    world = affine @ np.array([2.0, 3.0, 4.0, 1.0])
    expected_lps = np.array([ORIGIN[0] + 2 * COLUMN_SPACING, ORIGIN[1] + 3 * ROW_SPACING, 10.0])
    np.testing.assert_allclose(world[:3], expected_lps * np.array([-1, -1, 1]), atol=1e-9)


def test_without_positions_slices_follow_instance_number(tmp_path: Path) -> None:
    volume = hounsfield_slices(5, 16, 16)
    for index, instance in enumerate([3, 1, 5, 2, 4]):
        write_ct_slice(tmp_path / f"slice{index}", volume[instance - 1], None, instance, SERIES_A)
    series, failures = _results(tmp_path)
    assert failures == []
    np.testing.assert_array_equal(series[SERIES_A].pixels, volume)
    assert series[SERIES_A].metadata["orientation"] == "unknown"


def test_multiframe_file_gives_one_slice_per_frame_in_frame_order(tmp_path: Path) -> None:
    volume = hounsfield_slices(6, 20, 18)
    z_positions = [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]
    write_multiframe_ct(tmp_path / "enhanced", volume, z_positions, SERIES_A)
    series = read_dicom_file(tmp_path / "enhanced")
    np.testing.assert_array_equal(series.pixels, volume)
    assert series.frame_numbers == (1, 2, 3, 4, 5, 6)
    assert len(set(series.instance_uids)) == 1
    assert series.spacing == (ROW_SPACING, COLUMN_SPACING)
    np.testing.assert_allclose(series.affine[:3, 2], [0.0, 0.0, 2.0])


def test_bad_file_drops_only_itself(mixed_folder) -> None:
    folder, _, _ = mixed_folder
    victim = sorted(path for path in folder.rglob("*") if path.is_file() and path.suffix != ".txt")
    files_a = [
        path for path in victim if read_dicom_file(path).metadata["SeriesInstanceUID"] == SERIES_A
    ]
    data = files_a[0].read_bytes()
    files_a[0].write_bytes(data[: len(data) - 100])  # truncated pixel data
    odd = hounsfield_slices(1, 10, 10)[0]
    write_ct_slice(folder / "odd_size", odd, 99.0, 99, SERIES_A)

    series, failures = _results(folder)
    reasons = {failure.source: failure.reason for failure in failures}
    truncated = files_a[0].relative_to(folder).as_posix()
    assert "truncated" in reasons[truncated]
    assert "10x10" in reasons["odd_size"] and "32x40" in reasons["odd_size"]
    assert series[SERIES_A].num_slices == 6
    assert truncated not in series[SERIES_A].sources
    assert series[SERIES_B].num_slices == 4


def test_series_without_a_majority_size_fails_whole(tmp_path: Path) -> None:
    write_ct_slice(tmp_path / "a", hounsfield_slices(1, 16, 16)[0], 0.0, 1, SERIES_A)
    write_ct_slice(tmp_path / "b", hounsfield_slices(1, 8, 8)[0], 1.0, 2, SERIES_A)
    series, failures = _results(tmp_path)
    assert series == {}
    assert len(failures) == 1 and "different sizes" in failures[0].reason


def test_windows_from_preset_file_and_percentiles(mixed_folder) -> None:
    folder, _, _ = mixed_folder
    assert _results(folder, window="brain")[0][SERIES_A].window == (0.0, 80.0)
    assert _results(folder, window="soft tissue")[0][SERIES_A].window == (-150.0, 250.0)
    assert _results(folder)[0][SERIES_A].window == (-160.0, 240.0)  # the file's 40 / 400
    with pytest.raises(ConfigError, match=r"data\.window.*brain, subdural, lung"):
        next(iter_series(folder, window="liver"))


def test_percentile_window_when_the_file_has_none(tmp_path: Path) -> None:
    dataset = write_ct_slice(tmp_path / "one", hounsfield_slices(1, 32, 32)[0], 0.0, 1, SERIES_A)
    del dataset.WindowCenter, dataset.WindowWidth
    dataset.save_as(tmp_path / "one", enforce_file_format=True)
    series = read_dicom_file(tmp_path / "one")
    low, high = series.window
    assert -1000.0 <= low < high <= 100.0 and series.metadata["window"].startswith("percentiles")


def test_monochrome1_is_inverted(tmp_path: Path) -> None:
    volume = hounsfield_slices(1, 16, 16)
    dataset = write_ct_slice(tmp_path / "plain", volume[0], 0.0, 1, SERIES_A, intercept=0.0)
    dataset.PixelData = np.round(volume[0] + 1024).astype(np.uint16).tobytes()
    dataset.PhotometricInterpretation = "MONOCHROME1"
    dataset.save_as(tmp_path / "inverted", enforce_file_format=True)
    series = read_dicom_file(tmp_path / "inverted")
    np.testing.assert_array_equal(series.pixels[0], 65535.0 - (volume[0] + 1024))


def test_rgb_secondary_capture_becomes_grey_with_a_warning(tmp_path: Path, caplog) -> None:
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    write_secondary_capture_rgb(tmp_path / "capture.dcm", rgb)
    with caplog.at_level(logging.WARNING, logger="anogan.io.dicom"):
        series = read_dicom_file(tmp_path / "capture.dcm")
    np.testing.assert_allclose(series.pixels, 0.299 * 200 + 0.587 * 100 + 0.114 * 50, atol=1e-3)
    assert "capture.dcm" in caplog.text and "grey" in caplog.text


def test_header_text_is_sanitised(mixed_folder) -> None:
    folder, _, _ = mixed_folder
    description = _results(folder)[0][SERIES_A].metadata["SeriesDescription"]
    assert "/" not in description and "\n" not in description
    assert description == "head .. .. etc plain"


def test_non_images_are_skipped_and_broken_files_reported(tmp_path: Path, caplog) -> None:
    write_ct_slice(tmp_path / "ct", hounsfield_slices(1, 16, 16)[0], 0.0, 1, SERIES_A)
    shutil.copy(get_testdata_file("test-SR.dcm", download=False), tmp_path / "report")
    shutil.copy(get_testdata_file("MR_truncated.dcm", download=False), tmp_path / "broken")
    with caplog.at_level(logging.INFO, logger="anogan.io.dicom"):
        series, failures = _results(tmp_path)
    assert list(series) == [SERIES_A]
    assert [failure.source for failure in failures] == ["broken"]
    assert "truncated pixel data" in failures[0].reason
    assert "report" in caplog.text and "Comprehensive SR Storage" in caplog.text
    with pytest.raises(ImageReadError, match=r"^report: a Comprehensive SR Storage object"):
        read_dicom_file(tmp_path / "report")
