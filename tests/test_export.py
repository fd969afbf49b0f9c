"""Exported files as other tools read them: NIfTI maps, DICOM Secondary Capture."""

import shutil
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from anogan.cli import main
from anogan.export import NiftiStream, OutputError
from tests.scoring.phantom import lesion_volume, trained_model, write_ct_series

LESION_SLICES = (3, 4)


def test_streamed_nifti_equals_the_volume_written_at_once(tmp_path):
    rng = np.random.default_rng(0)
    maps = rng.random((5, 7, 9)).astype(np.float32)  # (S, H, W)
    affine = np.array([[-0.7, 0, 0, 10], [0, -0.7, 0, 20], [0, 0, 2.5, -5], [0, 0, 0, 1]])
    stream = NiftiStream(tmp_path / "map.nii.gz", maps.shape, affine)
    for pixel_map in maps:
        stream.write(pixel_map)
    assert not (tmp_path / "map.nii.gz").exists()  # only once complete
    image = nib.load(stream.close())
    assert image.shape == (9, 7, 5)
    assert np.allclose(image.affine, affine)
    assert np.array_equal(np.asarray(image.dataobj), np.transpose(maps, (2, 1, 0)))


def test_an_incomplete_nifti_is_not_left_behind(tmp_path):
    stream = NiftiStream(tmp_path / "map.nii.gz", (3, 4, 4), np.eye(4))
    stream.write(np.zeros((4, 4), np.float32))
    with pytest.raises(OutputError, match="1 of 3 slices"):
        stream.close()
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def scored_dicom(tmp_path_factory) -> tuple[Path, Path]:
    model = trained_model(tmp_path_factory.getbasetemp() / "phantom-model")
    root = tmp_path_factory.mktemp("dicom")
    volume, _ = lesion_volume(8, LESION_SLICES, seed=3)
    write_ct_series(root / "inputs" / "study", volume)
    out = root / "out"
    assert main(["score", "--dicom", str(root / "inputs"), "--model", str(model),
                 "--out", str(out)]) == 0  # fmt: skip
    return root / "inputs", out


def test_flagged_dicom_series_gets_a_secondary_capture_in_its_study(scored_dicom):
    inputs, out = scored_dicom
    source = pydicom.dcmread(sorted((inputs / "study").iterdir())[0])
    files = sorted(out.glob("dicom/*/*.dcm"))
    assert len(files) == len(LESION_SLICES)
    captures = [pydicom.dcmread(path) for path in files]
    for capture in captures:
        assert capture.SOPClassUID == pydicom.uid.SecondaryCaptureImageStorage
        assert capture.StudyInstanceUID == source.StudyInstanceUID
        assert capture.PatientID == source.PatientID
        assert capture.SeriesInstanceUID != source.SeriesInstanceUID
        assert capture.SourceImageSequence[0].ReferencedSOPClassUID == source.SOPClassUID
        assert capture.pixel_array.shape[2] == 3 and capture.pixel_array.shape[0] == 64
    assert len({capture.SeriesInstanceUID for capture in captures}) == 1
    assert len({capture.SOPInstanceUID for capture in captures}) == len(captures)


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools not installed")
def test_secondary_captures_pass_the_iod_verifier(scored_dicom):
    for path in sorted(scored_dicom[1].glob("dicom/*/*.dcm")):
        result = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
        errors = [line for line in (result.stdout + result.stderr).splitlines() if "Error" in line]
        assert errors == [], errors


@pytest.mark.skipif(shutil.which("dcm2pnm") is None, reason="dcmtk not installed")
def test_dcmtk_renders_the_secondary_captures(scored_dicom, tmp_path):
    for number, path in enumerate(sorted(scored_dicom[1].glob("dicom/*/*.dcm"))):
        picture = tmp_path / f"{number}.ppm"
        result = subprocess.run(["dcm2pnm", str(path), str(picture)], capture_output=True)
        assert result.returncode == 0, result.stderr
        assert picture.stat().st_size > 64 * 64 * 3
