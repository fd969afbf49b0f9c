"""Test data for scoring: a phantom anatomy, lesions in it, and one tiny model trained on it.

The healthy phantom is an ellipse whose brightness rises smoothly from the centre to the rim,
with a little jitter in position and contrast: simple enough that a model with widths
8-16-32-64 learns it in a few hundred iterations (seconds), while a bright lesion is something
it cannot reconstruct. Windows of 32 px slide over slices put on a 48 px grid, so scoring
exercises the stitching of overlapping windows.
"""

from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from scipy import ndimage

from anogan.config import config_from_dict
from pipelines.train_healthy import run_training
from tests.conftest import TINY

SIZE = 64  # phantom side in pixels
LESION_RADIUS = 6.0  # pixels
ITERATIONS = 500  # WGAN-GP and izi_f iterations of the tiny model
# The threshold is the maximum of CALIBRATION_SLICES healthy scores (target false-positive rate
# 1 / CALIBRATION_SLICES), so a healthy test slice exceeds it with probability about 1 / 201:
# with 20 slices at 5% a 9-healthy-slice volume had a one-in-three chance of a false flag,
# and any change to the random streams of training could set it off.
CALIBRATION_SLICES = 200
# Even so, a healthy slice as extreme as the most extreme of those 200 is flagged, and which
# one is the most extreme moves with the CPU's rounding (an Intel Xeon flagged a healthy slice
# of the volume below by 8e-5 over the threshold where an AMD EPYC did not). Test volumes draw
# their healthy slices from the middle half of the jitter, well inside what calibration saw.
VOLUME_SPREAD = 0.5
_MODELS: dict[Path, Path] = {}  # training root -> model folder, one training per test process


def phantom(rng: np.random.Generator, size: int = SIZE, spread: float = 1.0) -> np.ndarray:
    """One healthy slice, (size, size) float32 in [0, 1].

    `spread` scales the jitter: 1 for training and calibration slices (centre within 1 px,
    rim contrast within 10%), less for slices a test expects to stay below the threshold.
    """
    rows, columns = np.mgrid[0:size, 0:size].astype(np.float32)
    centre_row, centre_column = size / 2 + rng.uniform(-spread, spread, 2)
    radius = np.hypot(
        (rows - centre_row) / (size * 0.38), (columns - centre_column) / (size * 0.34)
    )
    contrast = rng.uniform(1 - 0.1 * spread, 1 + 0.1 * spread)
    image = np.where(radius <= 1, 0.35 + 0.3 * radius**2 * contrast, 0.0)
    return ndimage.gaussian_filter(image, 1.0).astype(np.float32)


def lesion_mask(size: int = SIZE, centre: tuple[int, int] = (26, 38)) -> np.ndarray:
    """(size, size) bool disc inside the phantom, away from its centre."""
    rows, columns = np.mgrid[0:size, 0:size]
    return np.hypot(rows - centre[0], columns - centre[1]) <= LESION_RADIUS


def with_lesion(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The slice with a bright lesion (intensity 1.0, soft edge) over `mask`."""
    profile = ndimage.gaussian_filter(mask.astype(np.float32), 0.7)
    return (image * (1 - profile) + profile * 1.0).astype(np.float32)


def lesion_volume(
    slices: int, lesion_slices: tuple[int, ...], seed: int = 7
) -> tuple[np.ndarray, np.ndarray]:
    """(S, H, W) float32 phantom slices in [0, 1], a lesion in `lesion_slices`; and its mask.

    The slices are drawn from the middle half of the healthy jitter (`VOLUME_SPREAD`).
    """
    rng = np.random.default_rng(seed)
    volume = np.stack([phantom(rng, spread=VOLUME_SPREAD) for _ in range(slices)])
    masks = np.zeros(volume.shape, dtype=bool)
    for index in lesion_slices:
        masks[index] = lesion_mask()
        volume[index] = with_lesion(volume[index], masks[index])
    return volume, masks


def save_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)).save(path)


def trained_model(root: Path) -> Path:
    """Train (once per process) the tiny phantom model under `root`; returns its folder."""
    if root in _MODELS:
        return _MODELS[root]
    rng = np.random.default_rng(0)
    data = root / "data"
    for index in range(60):
        save_png(data / f"train/healthy/{index:03d}.png", phantom(rng))
    for index in range(CALIBRATION_SLICES):
        save_png(data / f"dev_val/healthy/{index:03d}.png", phantom(rng))
    for index in range(8):
        save_png(data / f"dev_val/lesion/{index:03d}.png", with_lesion(phantom(rng), lesion_mask()))
    steps = {"sample_every": ITERATIONS, "quality_every": ITERATIONS}
    config = config_from_dict(
        {
            **TINY,
            "output_dir": str(root / "runs"),
            "data": {"image_size": 48, "patch_size": 32},
            "wgan": {**TINY["wgan"], **steps, "iterations": ITERATIONS},
            "encoder": {**TINY["encoder"], "iterations": ITERATIONS},
            "scoring": {**TINY["scoring"], "target_fpr": 1.0 / CALIBRATION_SLICES},
        }
    )
    summary = run_training(config, str(data), track=False)
    _MODELS[root] = summary.model_path.parent
    return _MODELS[root]


def write_ct_series(
    folder: Path,
    volume: np.ndarray,
    patient_name: str = "Phantom^Test",
    patient_id: str = "PHANTOM-1",
    series_uid: str | None = None,
    study_uid: str | None = None,
) -> list[Path]:
    """A small CT-like series, one file per slice, pixels 0..1 mapped to -1000..1000 HU."""
    folder.mkdir(parents=True, exist_ok=True)
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = generate_uid()
    paths = []
    for index, image in enumerate(volume):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"slice_{index:03d}.dcm"
        dataset = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        dataset.SOPClassUID = CTImageStorage
        dataset.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        dataset.StudyInstanceUID = study_uid
        dataset.SeriesInstanceUID = series_uid
        dataset.FrameOfReferenceUID = frame_uid
        dataset.PatientName = patient_name
        dataset.PatientID = patient_id
        dataset.PatientBirthDate = "19700101"
        dataset.PatientSex = "O"
        dataset.StudyDate, dataset.StudyTime = "20240102", "101500"
        dataset.AccessionNumber, dataset.StudyID = "ACC1", "1"
        dataset.ReferringPhysicianName = ""
        dataset.Modality, dataset.Manufacturer = "CT", "tests"
        dataset.SeriesNumber, dataset.InstanceNumber = 3, index + 1
        dataset.SeriesDescription = "phantom head"
        dataset.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        dataset.ImagePositionPatient = [0.0, 0.0, 3.0 * index]
        dataset.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        dataset.SliceThickness, dataset.PixelSpacing = 3.0, [0.8, 0.8]
        dataset.SamplesPerPixel, dataset.PhotometricInterpretation = 1, "MONOCHROME2"
        dataset.Rows, dataset.Columns = image.shape
        dataset.BitsAllocated, dataset.BitsStored, dataset.HighBit = 16, 16, 15
        dataset.PixelRepresentation = 1
        dataset.RescaleIntercept, dataset.RescaleSlope, dataset.RescaleType = -1000, 1, "HU"
        dataset.WindowCenter, dataset.WindowWidth = 0, 2000
        dataset.KVP, dataset.PatientPosition = 120, "HFS"
        dataset.PixelData = np.round(image * 2000).astype("<i2").tobytes()
        dataset.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
