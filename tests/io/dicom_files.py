"""Small DICOM files written with pydicom for the reader tests: CT slices and multi-frame CT."""

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    EnhancedCTImageStorage,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

ROW_SPACING, COLUMN_SPACING = 0.7, 0.8  # mm
ORIGIN = (-120.0, -90.0)  # (x, y) of the first pixel in LPS mm


def hounsfield_slices(count: int, rows: int, columns: int, seed: int = 0) -> np.ndarray:
    """(S, H, W) float32 HU: air, a body disc, and a per-slice marker so order is visible."""
    rng = np.random.default_rng(seed)
    row_grid, column_grid = np.mgrid[0:rows, 0:columns]
    body = (row_grid - rows / 2) ** 2 + (column_grid - columns / 2) ** 2 < (0.4 * rows) ** 2
    volume = np.full((count, rows, columns), -1000.0, dtype=np.float32)
    for index in range(count):
        volume[index][body] = 40.0 + rng.normal(0, 10, size=int(body.sum())).round()
        volume[index, 0, 0] = 100.0 * index  # slice marker, in HU
    return volume


def _base(series_uid: str, study_uid: str, sop_class: str) -> Dataset:
    dataset = Dataset()
    dataset.file_meta = FileMetaDataset()
    dataset.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset.file_meta.MediaStorageSOPClassUID = sop_class
    dataset.SOPClassUID = sop_class
    dataset.SOPInstanceUID = generate_uid()
    dataset.file_meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    dataset.SeriesInstanceUID = series_uid
    dataset.StudyInstanceUID = study_uid
    dataset.Modality = "CT"
    dataset.PatientID = "anon-01"
    dataset.StudyDate = "20240102"
    dataset.SeriesDescription = "head ../../etc\nplain"
    dataset.BodyPartExamined = "HEAD"
    dataset.SamplesPerPixel = 1
    dataset.PhotometricInterpretation = "MONOCHROME2"
    dataset.BitsAllocated = 16
    dataset.BitsStored = 16
    dataset.HighBit = 15
    dataset.PixelRepresentation = 0
    dataset.PixelSpacing = [ROW_SPACING, COLUMN_SPACING]
    return dataset


def write_ct_slice(
    path: Path,
    hounsfield: np.ndarray,
    z: float | None,
    instance: int | None,
    series_uid: str,
    study_uid: str = "1.2.826.0.1.3680043.8.498.1",
    slope: float = 1.0,
    intercept: float = -1024.0,
) -> Dataset:
    """Write one (H, W) HU slice as a CT file; `z` None leaves out the slice geometry."""
    dataset = _base(series_uid, study_uid, CTImageStorage)
    rows, columns = hounsfield.shape
    dataset.Rows, dataset.Columns = rows, columns
    if z is not None:
        dataset.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        dataset.ImagePositionPatient = [ORIGIN[0], ORIGIN[1], z]
    if instance is not None:
        dataset.InstanceNumber = instance
    dataset.RescaleSlope = f"{slope:g}"
    dataset.RescaleIntercept = f"{intercept:g}"
    dataset.WindowCenter = "40"
    dataset.WindowWidth = "400"
    stored = np.round((hounsfield - intercept) / slope).astype(np.uint16)
    dataset.PixelData = stored.tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return dataset


def write_multiframe_ct(
    path: Path, hounsfield: np.ndarray, z_positions: list[float], series_uid: str
) -> Dataset:
    """Write (F, H, W) HU frames as one Enhanced CT file, frame f at z_positions[f]."""
    dataset = _base(series_uid, "1.2.826.0.1.3680043.8.498.1", EnhancedCTImageStorage)
    frames, rows, columns = hounsfield.shape
    dataset.Rows, dataset.Columns, dataset.NumberOfFrames = rows, columns, frames
    del dataset.PixelSpacing
    shared = Dataset()
    measures, orientation, transform = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing = [ROW_SPACING, COLUMN_SPACING]
    measures.SliceThickness = 2.0
    orientation.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    transform.RescaleSlope, transform.RescaleIntercept = "1", "-1024"
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelValueTransformationSequence = Sequence([transform])
    dataset.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for z in z_positions:
        group, position = Dataset(), Dataset()
        position.ImagePositionPatient = [ORIGIN[0], ORIGIN[1], z]
        group.PlanePositionSequence = Sequence([position])
        per_frame.append(group)
    dataset.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    dataset.PixelData = np.round(hounsfield + 1024).astype(np.uint16).tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return dataset


def write_secondary_capture_rgb(path: Path, rgb: np.ndarray) -> Dataset:
    """Write (H, W, 3) uint8 as an RGB Secondary Capture."""
    dataset = _base(generate_uid(), generate_uid(), SecondaryCaptureImageStorage)
    dataset.Modality = "OT"
    rows, columns, _ = rgb.shape
    dataset.Rows, dataset.Columns = rows, columns
    dataset.SamplesPerPixel = 3
    dataset.PlanarConfiguration = 0
    dataset.PhotometricInterpretation = "RGB"
    dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 8, 8, 7
    dataset.PixelData = rgb.astype(np.uint8).tobytes()
    dataset.save_as(path, enforce_file_format=True)
    return dataset
