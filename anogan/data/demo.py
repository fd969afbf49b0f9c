"""The offline demo set: healthy brain slices from a shipped template, plus synthetic lesions.

Built from the MNI152 2009a T1 template that the nilearn wheel ships (no download). Each
"subject" is an axial slice at a random height, warped (affine and elastic), with its own
bias field, contrast curve and noise, to mimic variation between people and scanners. The
validation split holds further healthy subjects and subjects with one synthetic lesion each,
with its mask. The layout matches the real brain set:

    train/healthy/*.png, dev_val/healthy/*.png, dev_val/lesion/*.png, dev_val/masks/*.png,
    manifest.csv (path,label,subtype,role,mask)
"""

import csv
import importlib.resources
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image
from scipy import ndimage

from anogan.data.lesions import insert_lesion

logger = logging.getLogger(__name__)

TEMPLATE_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"  # in nilearn/datasets/data
SLICE_RANGE = (0.40, 0.72)  # axial heights used, as fractions of the template's z extent
DEMO_KINDS = ("bright", "dark", "ring")  # lesion kinds of the demo validation set
DEMO_RADII = (9.0, 16.0)  # lesion radius range in pixels at the demo's 128 px


@dataclass(frozen=True)
class DemoSpec:
    """Size of the demo set; stored beside it so a changed spec rebuilds it."""

    train_healthy: int = 600
    val_healthy: int = 100
    val_lesion: int = 100
    size: int = 128
    seed: int = 1234
    version: int = 1


def build_demo(root: str | Path, spec: DemoSpec | None = None) -> Path:
    """Write the demo set under `root`, unless the same spec is already there.

    Args:
        root: folder to create or reuse.
        spec: counts, image size and seed.

    Returns:
        The folder, laid out as the module docstring says.
    """
    spec = spec or DemoSpec()
    root = Path(root)
    stamp = root / "demo.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == asdict(spec):
        logger.info("Demo set already built in %s", root)
        return root

    logger.info("Building the demo set in %s (%d training slices)", root, spec.train_healthy)
    rng = np.random.default_rng(spec.seed)
    volume = _load_template()
    rows: list[dict[str, str]] = []
    for folder in ("train/healthy", "dev_val/healthy", "dev_val/lesion", "dev_val/masks"):
        (root / folder).mkdir(parents=True, exist_ok=True)

    for index in range(spec.train_healthy):
        path = f"train/healthy/subject_{index:04d}.png"
        _save_png(root / path, _random_subject(volume, spec.size, rng))
        rows.append({"path": path, "label": "0", "subtype": "healthy", "role": "train", "mask": ""})
    for index in range(spec.val_healthy):
        path = f"dev_val/healthy/subject_{index:04d}.png"
        _save_png(root / path, _random_subject(volume, spec.size, rng))
        rows.append(
            {"path": path, "label": "0", "subtype": "healthy", "role": "dev_val", "mask": ""}
        )
    for index in range(spec.val_lesion):
        rows.append(_lesion_subject(root, index, volume, spec.size, rng))

    with open(root / "manifest.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["path", "label", "subtype", "role", "mask"])
        writer.writeheader()
        writer.writerows(rows)
    stamp.write_text(json.dumps(asdict(spec)))
    return root


def _lesion_subject(
    root: Path, index: int, volume: np.ndarray, size: int, rng: np.random.Generator
) -> dict[str, str]:
    image = _random_subject(volume, size, rng)
    kind = DEMO_KINDS[index % len(DEMO_KINDS)]
    radius = rng.uniform(*DEMO_RADII)
    image, mask = insert_lesion(image, image > 0.1, kind, radius, rng)
    path = f"dev_val/lesion/subject_{index:04d}.png"
    mask_path = f"dev_val/masks/subject_{index:04d}.png"
    _save_png(root / path, np.clip(image, 0.0, 1.0))
    Image.fromarray(mask.astype(np.uint8) * 255).save(root / mask_path)
    return {"path": path, "label": "1", "subtype": kind, "role": "dev_val", "mask": mask_path}


def _load_template() -> np.ndarray:
    """The template as an (X, Y, Z) float array in [0, 1], RAS+ axes."""
    resource = importlib.resources.files("nilearn.datasets") / "data" / TEMPLATE_FILE
    with importlib.resources.as_file(resource) as path:
        image = nib.as_closest_canonical(nib.load(path))
        volume = np.asarray(image.dataobj, dtype=np.float32)
    return volume / max(float(volume.max()), 1e-6)


def _random_subject(volume: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """One augmented axial slice, (size, size) float32 in [0, 1], anterior at the top."""
    depth = volume.shape[2]
    height = rng.uniform(*SLICE_RANGE) * depth
    lower = int(height)
    weight = height - lower
    axial = (1 - weight) * volume[:, :, lower] + weight * volume[:, :, min(lower + 1, depth - 1)]
    image = axial.T[::-1]  # (Y, X): rows run anterior to posterior

    side = max(image.shape) + 16
    canvas = np.zeros((side, side), dtype=np.float32)
    top, left = (side - image.shape[0]) // 2, (side - image.shape[1]) // 2
    canvas[top : top + image.shape[0], left : left + image.shape[1]] = image
    canvas = ndimage.zoom(canvas, size / side, order=1)[:size, :size]

    canvas = _random_warp(canvas, rng)
    return _random_appearance(canvas, rng)


def _random_warp(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = image.shape[0]
    angle = np.deg2rad(rng.uniform(-10, 10))
    scale = rng.uniform(0.88, 1.08, size=2)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    matrix = rotation @ np.diag(1.0 / scale)
    centre = np.array([size / 2, size / 2])
    shift = rng.uniform(-0.04, 0.04, size=2) * size
    offset = centre - matrix @ centre + shift
    warped = ndimage.affine_transform(image, matrix, offset=offset, order=1)

    # Smooth elastic displacement: individual anatomy rather than one brain rescaled.
    rows, columns = np.mgrid[0:size, 0:size].astype(np.float32)
    displacement = [
        ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma=size / 10)
        for _ in range(2)
    ]
    amplitude = rng.uniform(1.0, 3.0) * size / 128
    displacement = [
        field / max(float(np.abs(field).max()), 1e-6) * amplitude for field in displacement
    ]
    coordinates = [rows + displacement[0], columns + displacement[1]]
    return ndimage.map_coordinates(warped, coordinates, order=1).astype(np.float32)


def _random_appearance(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    size = image.shape[0]
    rows, columns = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]
    coefficients = rng.normal(0, 0.12, size=5)
    bias = np.exp(
        coefficients[0] * rows
        + coefficients[1] * columns
        + coefficients[2] * rows * columns
        + coefficients[3] * rows**2
        + coefficients[4] * columns**2
    )
    gamma = rng.uniform(0.8, 1.25)
    gain = rng.uniform(0.85, 1.0)
    result = gain * np.power(np.clip(image * bias, 0.0, 1.0), gamma)
    noise_level = rng.uniform(0.005, 0.02)
    result = result + rng.normal(0.0, noise_level, size=image.shape) * (image > 0.02)
    return np.clip(result, 0.0, 1.0).astype(np.float32)


def _save_png(path: Path, image: np.ndarray) -> None:
    Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)).save(path)
