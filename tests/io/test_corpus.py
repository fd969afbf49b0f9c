"""Every DICOM test file that pip packages ship: read to a Series or rejected, by name.

The files are pydicom's bundled test, charset and palette files and the `pydicom-data`
package's, found by exact name through `pydicom.data.get_testdata_file` (which looks in both
without touching the network) or in pydicom's data folder. The tables state the expected
outcome of each file: a Series of the given (S, H, W), or an ImageReadError whose reason holds
the given text. A new file in either package fails `test_tables_cover_every_shipped_file`
until it is added here.
"""

import logging
from pathlib import Path

import data_store
import numpy as np
import pydicom
import pytest
from pydicom.data import data_manager, get_testdata_file
from pydicom.pixels import apply_color_lut, apply_modality_lut
from pydicom.uid import ImplicitVRLittleEndian

from anogan.errors import ImageReadError
from anogan.io import ReadFailure, iter_series, read_dicom_file

Expected = tuple[int, int, int] | str

PYDICOM_ROOT = Path(data_manager.DATA_ROOT)
PYDICOM_DATA_ROOT = Path(data_store.__file__).parent / "data"
LUMINANCE = np.array([0.299, 0.587, 0.114])

PYDICOM_FILES: dict[str, Expected] = {
    "693_J2KI.dcm": (1, 512, 512),
    "CT_small.dcm": (1, 128, 128),
    "ExplVR_BigEnd.dcm": (1, 60, 80),
    "ExplVR_BigEndNoMeta.dcm": "not an image",
    "ExplVR_LitEndNoMeta.dcm": "not an image",
    "GDCMJ2K_TextGBR.dcm": (1, 400, 400),
    "J2K_pixelrep_mismatch.dcm": (1, 512, 512),
    "JPEG-lossy.dcm": "no installed decoder accepts",
    "JPEG2000-embedded-sequence-delimiter.dcm": "no installed decoder accepts",
    "JPEG2000.dcm": (1, 1024, 256),
    "JPEGLSNearLossless_08.dcm": (1, 45, 10),
    "JPEGLSNearLossless_16.dcm": (1, 50, 10),
    "JPGExtended.dcm": (1, 1024, 256),
    "MR_small.dcm": (1, 64, 64),
    "MR_small_RLE.dcm": (1, 64, 64),
    "MR_small_bigendian.dcm": (1, 64, 64),
    "MR_small_expb.dcm": (1, 64, 64),
    "MR_small_implicit.dcm": (1, 64, 64),
    "MR_small_jp2klossless.dcm": (1, 64, 64),
    "MR_small_jpeg_ls_lossless.dcm": (1, 64, 64),
    "MR_small_padded.dcm": (1, 64, 64),
    "MR_truncated.dcm": "truncated pixel data",
    "README.txt": "not a DICOM file",
    "SC_jpeg_no_color_transform.dcm": (1, 256, 256),
    "SC_jpeg_no_color_transform_2.dcm": (1, 256, 256),
    "SC_rgb_dcmtk_+eb+cr.dcm": (1, 100, 100),
    "SC_rgb_dcmtk_+eb+cy+n1.dcm": (1, 100, 100),
    "SC_rgb_dcmtk_+eb+cy+n2.dcm": (1, 100, 100),
    "SC_rgb_dcmtk_+eb+cy+np.dcm": (1, 100, 100),
    "SC_rgb_dcmtk_+eb+cy+s2.dcm": (1, 100, 100),
    "SC_rgb_dcmtk_+eb+cy+s4.dcm": (1, 100, 100),
    "SC_rgb_gdcm_KY.dcm": (1, 100, 100),
    "SC_rgb_jls_lossy_line.dcm": (1, 100, 100),
    "SC_rgb_jls_lossy_sample.dcm": (1, 100, 100),
    "SC_rgb_jpeg.dcm": (1, 256, 256),
    "SC_rgb_jpeg_app14_dcmd.dcm": (1, 256, 256),
    "SC_rgb_jpeg_dcmd.dcm": (1, 256, 256),
    "SC_rgb_jpeg_dcmtk.dcm": (1, 100, 100),
    "SC_rgb_jpeg_gdcm.dcm": (1, 100, 100),
    "SC_rgb_jpeg_lossy_gdcm.dcm": (1, 100, 100),
    "SC_rgb_rle.dcm": (1, 100, 100),
    "SC_rgb_rle_16bit.dcm": (1, 100, 100),
    "SC_rgb_rle_16bit_2frame.dcm": (2, 100, 100),
    "SC_rgb_rle_2frame.dcm": (2, 100, 100),
    "SC_rgb_rle_32bit.dcm": (1, 100, 100),
    "SC_rgb_rle_32bit_2frame.dcm": (2, 100, 100),
    "SC_rgb_small_odd.dcm": (1, 3, 3),
    "SC_rgb_small_odd_big_endian.dcm": (1, 3, 3),
    "SC_rgb_small_odd_jpeg.dcm": (1, 3, 3),
    "SC_ybr_full_422_uncompressed.dcm": (1, 100, 100),
    "UN_sequence.dcm": "no pixel data",
    "badVR.dcm": "not an image",
    "crayons.icc": "not a DICOM file",
    "empty_charset_LEI.dcm": "no pixel data",
    "examples_jpeg2k.dcm": (1, 480, 640),
    "examples_overlay.dcm": (1, 300, 484),
    "examples_palette.dcm": (1, 350, 800),
    "examples_rgb_color.dcm": (1, 240, 320),
    "examples_ybr_color.dcm": (30, 240, 320),
    "image_dfl.dcm": (1, 512, 512),
    "liver_1frame.dcm": "not an image",
    "liver_expb_1frame.dcm": "not an image",
    "meta_missing_tsyntax.dcm": "missing transfer syntax",
    "nested_priv_SQ.dcm": "missing required image",
    "no_meta.dcm": "not a DICOM file",
    "no_meta_group_length.dcm": "no pixel data",
    "priv_SQ.dcm": "no pixel data",
    "reportsi.dcm": "not an image",
    "reportsi_with_empty_number_tags.dcm": "not an image",
    "rtdose.dcm": "not an image",
    "rtdose_1frame.dcm": "not an image",
    "rtdose_expb.dcm": "not an image",
    "rtdose_expb_1frame.dcm": "not an image",
    "rtdose_rle.dcm": "not an image",
    "rtdose_rle_1frame.dcm": "not an image",
    "rtplan.dcm": "not an image",
    "rtplan.dump": "not a DICOM file",
    "rtplan_truncated.dcm": "not an image",
    "rtstruct.dcm": "not an image",
    "rtstruct.dump": "not a DICOM file",
    "test-SR.dcm": "not an image",
    "test1.json": "not a DICOM file",
    "test_PN.json": "not a DICOM file",
    "waveform_ecg.dcm": "not an image",
    "zipMR.gz": "not a DICOM file",
}
PYDICOM_DATA_FILES: dict[str, Expected] = {
    "693_J2KR.dcm": (1, 512, 512),
    "693_UNCI.dcm": (1, 512, 512),
    "693_UNCR.dcm": (1, 512, 512),
    "JPEG-LL.dcm": (1, 1024, 256),
    "JPEG2000_UNC.dcm": (1, 1024, 256),
    "JPGLosslessP14SV1_1s_1f_8b.dcm": (1, 768, 1024),
    "MR-SIEMENS-DICOM-WithOverlays.dcm": (1, 484, 484),
    "MR2_J2KI.dcm": (1, 1024, 1024),
    "MR2_J2KR.dcm": (1, 1024, 1024),
    "MR2_UNCI.dcm": (1, 1024, 1024),
    "MR2_UNCR.dcm": (1, 1024, 1024),
    "OBXXXX1A.dcm": (1, 600, 800),
    "OBXXXX1A_2frame.dcm": (2, 600, 800),
    "OBXXXX1A_expb.dcm": (1, 600, 800),
    "OBXXXX1A_expb_2frame.dcm": (2, 600, 800),
    "OBXXXX1A_rle.dcm": (1, 600, 800),
    "OBXXXX1A_rle_2frame.dcm": (2, 600, 800),
    "OT-PAL-8-face.dcm": (1, 480, 640),
    "RG1_J2KI.dcm": (1, 1955, 1841),
    "RG1_J2KR.dcm": (1, 1955, 1841),
    "RG1_UNCI.dcm": (1, 1955, 1841),
    "RG1_UNCR.dcm": (1, 1955, 1841),
    "RG3_J2KI.dcm": (1, 1760, 1760),
    "RG3_J2KR.dcm": (1, 1760, 1760),
    "RG3_UNCI.dcm": (1, 1760, 1760),
    "RG3_UNCR.dcm": (1, 1760, 1760),
    "SC_rgb.dcm": (1, 100, 100),
    "SC_rgb_16bit.dcm": (1, 100, 100),
    "SC_rgb_16bit_2frame.dcm": (2, 100, 100),
    "SC_rgb_2frame.dcm": (2, 100, 100),
    "SC_rgb_32bit.dcm": (1, 100, 100),
    "SC_rgb_32bit_2frame.dcm": (2, 100, 100),
    "SC_rgb_dcmtk_ebcr_dcmd.dcm": (1, 100, 100),
    "SC_rgb_dcmtk_ebcyn1_dcmd.dcm": (1, 100, 100),
    "SC_rgb_dcmtk_ebcyn2_dcmd.dcm": (1, 100, 100),
    "SC_rgb_dcmtk_ebcynp_dcmd.dcm": (1, 100, 100),
    "SC_rgb_dcmtk_ebcys2_dcmd.dcm": (1, 100, 100),
    "SC_rgb_dcmtk_ebcys4_dcmd.dcm": (1, 100, 100),
    "SC_rgb_expb.dcm": (1, 100, 100),
    "SC_rgb_expb_16bit.dcm": (1, 100, 100),
    "SC_rgb_expb_16bit_2frame.dcm": (2, 100, 100),
    "SC_rgb_expb_2frame.dcm": (2, 100, 100),
    "SC_rgb_expb_32bit.dcm": (1, 100, 100),
    "SC_rgb_expb_32bit_2frame.dcm": (2, 100, 100),
    "SC_rgb_gdcm2k_uncompressed.dcm": (1, 100, 100),
    "SC_ybr_full_uncompressed.dcm": (1, 100, 100),
    "US1_J2KI.dcm": (1, 480, 640),
    "US1_J2KR.dcm": (1, 480, 640),
    "US1_UNCI.dcm": (1, 480, 640),
    "US1_UNCR.dcm": (1, 480, 640),
    "bad_sequence.dcm": (1, 512, 512),
    "color-pl.dcm": (1, 120, 256),
    "color-px.dcm": (1, 120, 256),
    "color3d_jpeg_baseline.dcm": (120, 480, 640),
    "eCT_Supplemental.dcm": (2, 512, 512),
    "emri_small.dcm": (10, 64, 64),
    "emri_small_RLE.dcm": (10, 64, 64),
    "emri_small_big_endian.dcm": (10, 64, 64),
    "emri_small_jpeg_2k_lossless.dcm": (10, 64, 64),
    "emri_small_jpeg_2k_lossless_too_short.dcm": "truncated file",
    "emri_small_jpeg_ls_lossless.dcm": (10, 64, 64),
    "explicit_VR-UN.dcm": (1, 512, 512),
    "gdcm-US-ALOKA-16.dcm": (1, 480, 640),
    "gdcm-US-ALOKA-16_big.dcm": (1, 480, 640),
    "liver.dcm": "not an image",
    "liver_expb.dcm": "not an image",
    "mlut_18.dcm": (1, 512, 512),
    "vlut_04.dcm": (1, 512, 512),
}
CHARSET_FILES: dict[str, Expected] = {
    "FileInfo.txt": "not a DICOM file",
    "chrArab.dcm": (1, 32, 32),
    "chrFren.dcm": (1, 32, 32),
    "chrFrenMulti.dcm": (1, 32, 32),
    "chrGerm.dcm": (1, 32, 32),
    "chrGreek.dcm": (1, 32, 32),
    "chrH31.dcm": (1, 32, 32),
    "chrH32.dcm": (1, 32, 32),
    "chrHbrw.dcm": (1, 32, 32),
    "chrI2.dcm": (1, 32, 32),
    "chrJapMulti.dcm": "no pixel data",
    "chrJapMultiExplicitIR6.dcm": "no pixel data",
    "chrKoreanMulti.dcm": "no pixel data",
    "chrRuss.dcm": (1, 32, 32),
    "chrSQEncoding.dcm": "no pixel data",
    "chrSQEncoding1.dcm": "no pixel data",
    "chrX1.dcm": (1, 32, 32),
    "chrX2.dcm": (1, 32, 32),
}
PALETTE_FILES: dict[str, Expected] = {
    "README.md": "not a DICOM file",
    "fall.dcm": "not an image",
    "hotiron.dcm": "not an image",
    "hotmetalblue.dcm": "not an image",
    "pet.dcm": "not an image",
    "pet20step.dcm": "not an image",
    "spring.dcm": "not an image",
    "summer.dcm": "not an image",
    "winter.dcm": "not an image",
}

# Same image, other encodings: (encoded, reference, largest mean absolute difference allowed
# as a fraction of the reference's range). Lossless pairs allow nothing.
SIBLINGS = [
    ("MR_small_RLE.dcm", "MR_small.dcm", 0.0),
    ("MR_small_bigendian.dcm", "MR_small.dcm", 0.0),
    ("MR_small_expb.dcm", "MR_small.dcm", 0.0),
    ("MR_small_implicit.dcm", "MR_small.dcm", 0.0),
    ("MR_small_jp2klossless.dcm", "MR_small.dcm", 0.0),
    ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm", 0.0),
    ("MR_small_padded.dcm", "MR_small.dcm", 0.0),
    ("emri_small_RLE.dcm", "emri_small.dcm", 0.0),
    ("emri_small_big_endian.dcm", "emri_small.dcm", 0.0),
    ("emri_small_jpeg_2k_lossless.dcm", "emri_small.dcm", 0.0),
    ("emri_small_jpeg_ls_lossless.dcm", "emri_small.dcm", 0.0),
    ("OBXXXX1A_rle.dcm", "OBXXXX1A.dcm", 0.0),
    ("OBXXXX1A_rle_2frame.dcm", "OBXXXX1A_2frame.dcm", 0.0),
    ("SC_rgb_rle.dcm", "SC_rgb.dcm", 0.0),
    ("SC_rgb_expb_16bit.dcm", "SC_rgb_16bit.dcm", 0.0),
    ("SC_rgb_rle_32bit_2frame.dcm", "SC_rgb_32bit_2frame.dcm", 0.0),
    ("693_J2KR.dcm", "693_UNCR.dcm", 0.0),
    ("MR2_J2KR.dcm", "MR2_UNCR.dcm", 0.0),
    ("RG1_J2KR.dcm", "RG1_UNCR.dcm", 0.0),
    ("US1_J2KR.dcm", "US1_UNCR.dcm", 0.0),
    ("693_J2KI.dcm", "693_UNCI.dcm", 0.01),
    ("MR2_J2KI.dcm", "MR2_UNCI.dcm", 0.01),
    ("RG1_J2KI.dcm", "RG1_UNCI.dcm", 0.01),
    ("RG3_J2KI.dcm", "RG3_UNCI.dcm", 0.01),
    ("US1_J2KI.dcm", "US1_UNCI.dcm", 0.01),
    ("SC_rgb_jpeg_dcmtk.dcm", "SC_rgb.dcm", 0.01),
    ("SC_rgb_dcmtk_+eb+cy+np.dcm", "SC_rgb.dcm", 0.01),
    ("SC_rgb_jls_lossy_sample.dcm", "SC_rgb.dcm", 0.01),
]


def _path(name: str, folder: str = "") -> Path:
    if folder:
        return PYDICOM_ROOT / folder / name
    found = get_testdata_file(name, download=False)
    assert found is not None, f"{name} is not shipped by pydicom or pydicom-data"
    return Path(found)


def _cases() -> list[tuple[str, str, Expected]]:
    cases = [(name, "", expected) for name, expected in PYDICOM_FILES.items()]
    cases += [(name, "", expected) for name, expected in PYDICOM_DATA_FILES.items()]
    cases += [(name, "charset_files", expected) for name, expected in CHARSET_FILES.items()]
    cases += [(name, "palettes", expected) for name, expected in PALETTE_FILES.items()]
    return cases


def _pydicom_reference(path: Path) -> np.ndarray:
    """(S, H, W) float64 as plain pydicom decodes it: modality LUT, palette, grey by luminance."""
    dataset = pydicom.dcmread(path, force=True)
    if "TransferSyntaxUID" not in dataset.file_meta:  # stored without file meta
        dataset.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    array = dataset.pixel_array
    photometric = dataset.PhotometricInterpretation
    if photometric == "PALETTE COLOR":
        array = apply_color_lut(array, dataset)
    if (array.shape[-1] == 3 and dataset.SamplesPerPixel == 3) or photometric == "PALETTE COLOR":
        values = array.astype(np.float64) @ LUMINANCE
    else:
        values = np.asarray(apply_modality_lut(array, dataset), dtype=np.float64)
        shared = dataset.get("SharedFunctionalGroupsSequence")
        if shared and "PixelValueTransformationSequence" in shared[0]:  # enhanced objects
            transform = shared[0].PixelValueTransformationSequence[0]
            values = values * float(transform.RescaleSlope) + float(transform.RescaleIntercept)
    if photometric == "MONOCHROME1":  # inverted within the storable range, not the data's
        bits = int(dataset.BitsStored)
        signed = dataset.PixelRepresentation == 1
        ends = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        low, high = np.asarray(apply_modality_lut(np.array(ends), dataset), dtype=np.float64)
        values = low + high - values
    frames = int(dataset.get("NumberOfFrames") or 1)
    return values.reshape(frames, *values.shape[-2:]) if values.ndim < 3 or frames == 1 else values


@pytest.mark.parametrize(("name", "folder", "expected"), _cases(), ids=lambda value: str(value))
def test_shipped_file(name: str, folder: str, expected: Expected) -> None:
    path = _path(name, folder)
    if isinstance(expected, str):
        with pytest.raises(ImageReadError) as raised:
            read_dicom_file(path)
        assert str(raised.value).startswith(f"{name}: ")
        assert expected in raised.value.reason
        return

    series = read_dicom_file(path)
    assert series.pixels.shape == expected and series.pixels.dtype == np.float32
    assert series.sources == (name,) * expected[0] and np.isfinite(series.pixels).all()
    reference = _pydicom_reference(path)
    scale = max(1.0, float(np.abs(reference).max()))
    np.testing.assert_allclose(series.pixels, reference, rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize(("encoded", "reference", "tolerance"), SIBLINGS, ids=lambda v: str(v))
def test_codecs_agree_with_the_uncompressed_file(
    encoded: str, reference: str, tolerance: float
) -> None:
    decoded = read_dicom_file(_path(encoded)).pixels
    truth = read_dicom_file(_path(reference)).pixels
    assert decoded.shape == truth.shape
    if tolerance == 0.0:
        np.testing.assert_array_equal(decoded, truth)
        return
    spread = float(truth.max() - truth.min())
    assert float(np.abs(decoded - truth).mean()) <= tolerance * spread


def test_tables_cover_every_shipped_file() -> None:
    shipped = {
        "": {path.name for path in (PYDICOM_ROOT / "test_files").iterdir() if path.is_file()}
        | {path.name for path in PYDICOM_DATA_ROOT.iterdir()},
        "charset_files": {path.name for path in (PYDICOM_ROOT / "charset_files").iterdir()},
        "palettes": {path.name for path in (PYDICOM_ROOT / "palettes").iterdir()},
    }
    listed: dict[str, set[str]] = {"": set(), "charset_files": set(), "palettes": set()}
    for name, folder, _ in _cases():
        listed[folder].add(name)
    assert listed == shipped


def test_dicomdir_tree_is_grouped_into_its_series(caplog) -> None:
    """pydicom's DICOMDIR test tree: indexes skipped, 13 series, 50 image stubs without pixels."""
    with caplog.at_level(logging.DEBUG, logger="anogan.io.dicom"):
        results = list(iter_series(PYDICOM_ROOT / "test_files" / "dicomdirtests"))
    series = [result for result in results if not isinstance(result, ReadFailure)]
    failures = [result for result in results if isinstance(result, ReadFailure)]
    assert sorted(item.num_slices for item in series) == [1] * 7 + [2, 3, 3, 4, 5, 7]
    assert sum(item.num_slices for item in series) == 31
    assert len({item.series_id for item in series}) == 13
    assert all(len({source.rsplit("/", 1)[0] for source in item.sources}) == 1 for item in series)
    assert len(failures) == 50
    assert all(failure.source.startswith("TINY_ALPHA/") for failure in failures)
    assert all("no pixel data" in failure.reason for failure in failures)
    assert "DICOMDIR-bigEnd: a DICOMDIR" in caplog.text
