"""Find a training and validation set in whatever `DATA` points at.

Accepted layouts, tried in this order:
  - nothing: the offline demo set, built on first use (see `anogan.data.demo`);
  - a manifest CSV, or a folder holding `manifest.csv`: columns `path,label,role`, optional
    `subtype` and `mask`; paths relative to the CSV; role `train` or `dev_val`/`val`/`validation`;
  - a folder laid out like the brain tumour set: `train/healthy/`, `dev_val/healthy/`, and
    anomalies in `dev_val/tumor/` or `dev_val/lesion/`;
  - a plain folder of healthy images, NIfTI volumes or DICOM files, of which
    `validation_fraction` (whole files or series, never single slices) is held back.
"""

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from anogan.errors import DataError

logger = logging.getLogger(__name__)

ItemKind = Literal["image", "nifti", "dicom"]
DataKind = Literal["auto", "images", "nifti", "dicom"]
Role = Literal["train", "validation"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
VALIDATION_ROLES = ("dev_val", "val", "validation", "calibration")
TEST_ROLES = ("test", "holdout")  # left out of training runs, taken by `anogan evaluate`
ANOMALY_FOLDERS = ("tumor", "tumour", "lesion", "anomaly", "abnormal")


@dataclass(frozen=True)
class DataItem:
    """One input: an image file, a NIfTI file, or a DICOM folder, with its label.

    Attributes:
        path: the file or folder.
        label: 0 healthy, 1 anomalous.
        role: `train` (healthy only) or `validation` (calibration and metrics).
        kind: the reader to use.
        subtype: finer label (tumour type, lesion kind), for per-subtype metrics.
        mask: optional anomaly mask image on the same grid as `path`.
    """

    path: Path
    label: int
    role: Role
    kind: ItemKind
    subtype: str = ""
    mask: Path | None = None


@dataclass(frozen=True)
class DataSet:
    """The items of a run and a one-line description for logs and MLflow."""

    root: Path
    items: tuple[DataItem, ...]
    description: str

    @property
    def train(self) -> list[DataItem]:
        return [item for item in self.items if item.role == "train" and item.label == 0]

    @property
    def validation(self) -> list[DataItem]:
        return [item for item in self.items if item.role == "validation"]


def resolve_data(
    data: str | Path, kind: DataKind = "auto", validation_fraction: float = 0.15, seed: int = 0
) -> DataSet:
    """Work out the layout of `data` and list its items.

    Args:
        data: a manifest CSV, or a folder in one of the layouts of the module docstring.
        kind: force a reader; `auto` guesses from file suffixes.
        validation_fraction: share of a plain folder held back as healthy validation.
        seed: fixes that split.

    Raises:
        DataError: the path does not exist, holds no usable inputs, or a manifest is malformed.
    """
    path = Path(data)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder for training data")
    if path.is_file() and path.suffix.lower() == ".csv":
        dataset = _from_manifest(path, kind)
    elif path.is_dir() and (path / "manifest.csv").is_file() and kind in ("auto", "images"):
        dataset = _from_manifest(path / "manifest.csv", kind)
    elif path.is_dir() and (path / "train" / "healthy").is_dir():
        dataset = _from_split_folders(path, kind)
    else:
        dataset = _from_plain(path, kind, validation_fraction, seed)
    if not dataset.train:
        raise DataError(f"{path}: found no healthy training inputs ({dataset.description})")
    logger.info("Data: %s", dataset.description)
    return dataset


def resolve_evaluation_data(data: str | Path, kind: DataKind = "auto") -> DataSet:
    """List the labelled inputs of `data` for `anogan evaluate`; every item has role validation.

    Accepted layouts: a manifest CSV (or a folder holding `manifest.csv`), whose rows of every
    role but `train` and `ignore` are taken (dev_val, val, validation, calibration, test,
    holdout); a folder laid out like the brain tumour set, whose `dev_val/` is taken; or a
    folder with `healthy/` beside anomaly folders (`tumor/`, `lesion/`, ...), where a
    subfolder of an anomaly folder names the subtype (`tumor/glioma/x.png`).

    Raises:
        DataError: the path does not exist, is none of these layouts, or holds no inputs.
    """
    path = Path(data)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder for evaluation data")
    if path.is_file() and path.suffix.lower() == ".csv":
        dataset = _from_manifest(path, kind, evaluation=True)
    elif path.is_dir() and (path / "manifest.csv").is_file() and kind in ("auto", "images"):
        dataset = _from_manifest(path / "manifest.csv", kind, evaluation=True)
    elif path.is_dir() and (path / "dev_val" / "healthy").is_dir():
        dataset = _from_split_folders(path, kind)
    elif path.is_dir() and (path / "healthy").is_dir():
        dataset = _from_labelled_folders(path, kind)
    else:
        raise DataError(
            f"{path}: not a labelled set; give a manifest CSV (path,label,role), or a folder "
            "with healthy/ beside tumor/ or lesion/ (or dev_val/healthy/)"
        )
    items = tuple(item for item in dataset.items if item.role == "validation")
    if not items:
        raise DataError(f"{path}: no evaluation inputs found ({dataset.description})")
    return DataSet(dataset.root, items, dataset.description)


def _from_labelled_folders(root: Path, kind: DataKind) -> DataSet:
    items = [
        DataItem(path, 0, "validation", item_kind, "healthy")
        for path, item_kind in _inputs_in(root / "healthy", kind)
    ]
    for folder in ANOMALY_FOLDERS:
        for path, item_kind in _inputs_in(root / folder, kind):
            inner = path.relative_to(root / folder).parts
            subtype = inner[0] if len(inner) > 1 else folder
            items.append(DataItem(path, 1, "validation", item_kind, subtype))
    return _described(root, items, f"labelled folders in {root}")


def _from_manifest(manifest: Path, kind: DataKind, evaluation: bool = False) -> DataSet:
    root = manifest.parent
    with open(manifest, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "label", "role"} - set(reader.fieldnames or ())
        if missing:
            raise DataError(
                f"{manifest}: manifest needs columns path,label,role; missing {sorted(missing)}"
            )
        rows = list(reader)
    items = []
    for line, row in enumerate(rows, start=2):
        role = _manifest_role(manifest, line, row["role"], evaluation)
        if role is None:
            continue
        try:
            label = int(row["label"])
        except ValueError:
            raise DataError(
                f"{manifest}, line {line}: label {row['label']!r} is not 0 or 1"
            ) from None
        path = root / row["path"]
        mask = root / row["mask"] if row.get("mask") else None
        item_kind = _kind_of(path, kind)
        items.append(DataItem(path, int(label > 0), role, item_kind, row.get("subtype", ""), mask))
    return _described(root, items, f"manifest {manifest}")


def _manifest_role(manifest: Path, line: int, role: str, evaluation: bool) -> Role | None:
    role = role.strip().lower()
    if role == "train":
        return "train"
    if role in VALIDATION_ROLES or (evaluation and role in TEST_ROLES):
        return "validation"
    if role in (*TEST_ROLES, "ignore", ""):
        return None
    raise DataError(f"{manifest}, line {line}: role {role!r} is not train, dev_val or test")


def _from_split_folders(root: Path, kind: DataKind) -> DataSet:
    items = [
        DataItem(path, 0, "train", item_kind, "healthy")
        for path, item_kind in _inputs_in(root / "train" / "healthy", kind)
    ]
    validation = root / "dev_val"
    for path, item_kind in _inputs_in(validation / "healthy", kind):
        items.append(DataItem(path, 0, "validation", item_kind, "healthy"))
    for folder in ANOMALY_FOLDERS:
        for path, item_kind in _inputs_in(validation / folder, kind):
            items.append(DataItem(path, 1, "validation", item_kind, folder))
    return _described(root, items, f"split folders in {root}")


def _from_plain(root: Path, kind: DataKind, fraction: float, seed: int) -> DataSet:
    inputs = _inputs_in(root, kind)
    if not inputs:
        raise DataError(
            f"{root}: no PNG/JPEG/TIFF images, NIfTI volumes or DICOM files found "
            "(or pass a manifest CSV)"
        )
    order = np.random.default_rng(seed).permutation(len(inputs))
    held_back = set(order[: max(1, round(fraction * len(inputs)))].tolist()) if fraction else set()
    if len(held_back) >= len(inputs):
        held_back = set()
    items = [
        DataItem(path, 0, "validation" if index in held_back else "train", item_kind, "healthy")
        for index, (path, item_kind) in enumerate(inputs)
    ]
    return _described(root, items, f"folder {root}, {len(held_back)} held back for calibration")


def _inputs_in(folder: Path, kind: DataKind) -> list[tuple[Path, ItemKind]]:
    """Image and NIfTI files under `folder`, or the folder itself as one DICOM input."""
    if not folder.is_dir():
        return []
    files = sorted(path for path in folder.rglob("*") if path.is_file())
    found = []
    for path in files:
        item_kind = _kind_of(path, kind, strict=False)
        if item_kind in ("image", "nifti"):
            found.append((path, item_kind))
    if kind == "dicom" or (kind == "auto" and not found and files):
        return [(folder, "dicom")]
    return found


def _kind_of(path: Path, kind: DataKind, strict: bool = True) -> ItemKind | None:
    if kind == "images":
        return "image"
    if kind in ("nifti", "dicom"):
        return kind
    name = path.name.lower()
    if name.endswith(IMAGE_SUFFIXES):
        return "image"
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    return "dicom" if strict else None


def _described(root: Path, items: list[DataItem], origin: str) -> DataSet:
    train = sum(item.role == "train" and item.label == 0 for item in items)
    healthy = sum(item.role == "validation" and item.label == 0 for item in items)
    anomalous = sum(item.role == "validation" and item.label == 1 for item in items)
    description = (
        f"{origin}: {train} healthy training inputs, {healthy} healthy and {anomalous} "
        "anomalous validation inputs"
    )
    return DataSet(root, tuple(items), description)
