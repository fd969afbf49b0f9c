"""`iter_series` on mixed folders, and training reading a DICOM folder through it."""

from pathlib import Path

import nibabel
import numpy as np
import pytest
from PIL import Image

from anogan.config import DataConfig
from anogan.data.dataset import load_slices
from anogan.data.sources import DataItem
from anogan.errors import ImageReadError
from anogan.io import ReadFailure, Series, iter_series
from tests.io.dicom_files import hounsfield_slices, write_ct_slice


def test_a_mixed_folder_is_read_by_each_reader(tmp_path: Path) -> None:
    Image.fromarray(np.full((16, 16), 90, dtype=np.uint8)).save(tmp_path / "slice.png")
    (tmp_path / "volumes").mkdir()
    nibabel.save(
        nibabel.Nifti1Image(np.ones((8, 8, 3), np.float32), np.eye(4)),
        tmp_path / "volumes" / "brain.nii.gz",
    )
    (tmp_path / "scanner").mkdir()
    volume = hounsfield_slices(3, 16, 16)
    for index in range(3):
        write_ct_slice(
            tmp_path / "scanner" / f"IM{index}", volume[index], float(index), index, "9.8"
        )
    (tmp_path / "scanner" / "IM_bad").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00" * 10)

    results = list(iter_series(tmp_path))
    kinds = sorted(result.kind for result in results if isinstance(result, Series))
    assert kinds == ["dicom", "image", "nifti"]
    failures = [result for result in results if isinstance(result, ReadFailure)]
    assert [failure.source for failure in failures] == ["scanner/IM_bad"]
    dicom = next(
        result for result in results if isinstance(result, Series) and result.kind == "dicom"
    )
    assert dicom.sources == ("scanner/IM0", "scanner/IM1", "scanner/IM2")


def test_a_missing_path_is_an_image_read_error(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="no such file or folder"):
        next(iter_series(tmp_path / "absent"))


def test_training_reads_a_dicom_folder_with_its_window(tmp_path: Path) -> None:
    volume = hounsfield_slices(4, 48, 48)
    for index in range(4):
        write_ct_slice(tmp_path / f"s{index}", volume[index], 2.0 * index, index + 1, "7.7")
    item = DataItem(tmp_path, 0, "train", "dicom")
    slices = load_slices([item], DataConfig(image_size=32, patch_size=32, window="brain"), "train")
    assert slices.images.shape == (4, 1, 32, 32)
    assert slices.images.min() >= -1.0 and slices.images.max() <= 1.0
    assert slices.sources == ["s0#0", "s1#1", "s2#2", "s3#3"]
    assert slices.failures == []
