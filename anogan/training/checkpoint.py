"""Checkpoints: atomic save, safe load (tensors and plain values only), content hash.

A checkpoint is a dict of tensors and plain Python values written with `torch.save` and read
back with `torch.load(weights_only=True)`, so loading a file never runs code from it. The key
`format` marks it as ours; anything else is refused with a CheckpointError naming the file.
"""

import hashlib
import logging
import os
import pickle
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from anogan.config import Config, config_from_dict, config_to_dict
from anogan.errors import CheckpointError
from anogan.models.fanogan import FAnoGAN
from anogan.scoring.reference import HealthyReference

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "anogan-checkpoint"
CHECKPOINT_VERSION = 1
HASH_CHUNK_BYTES = 1 << 20
ZIP_MAGIC = b"PK\x03\x04"  # torch.save writes a zip archive
MODEL_FILE = "model.pt"  # the finished model inside a run's model folder


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> str:
    """Write `payload` to `path` atomically and return the file's sha256.

    The file is written beside its destination, flushed to disk, then renamed over it: a
    crash leaves either the old checkpoint or the new one, never half of one.

    Args:
        payload: tensors, state dicts and plain values (no custom classes).
        path: destination file.

    Returns:
        Hex sha256 of the written file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(record, stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    digest = file_sha256(path)
    logger.debug("Saved checkpoint %s (sha256 %s)", path, digest[:12])
    return digest


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`.

    Raises:
        CheckpointError: the file is missing, not a torch file, holds anything but tensors
            and plain values, or is not an anogan checkpoint of a known version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    with open(path, "rb") as stream:
        if stream.read(len(ZIP_MAGIC)) != ZIP_MAGIC:
            raise CheckpointError(
                f"{path}: not an anogan checkpoint (not a torch zip archive); "
                "pass a model.pt written by anogan train"
            )
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except (
        pickle.UnpicklingError,
        zipfile.BadZipFile,
        EOFError,
        RuntimeError,
        KeyError,
        ValueError,
    ) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise CheckpointError(
            f"{path}: not a loadable anogan checkpoint ({first_line[:200]})"
        ) from None
    if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not an anogan checkpoint (no format key {CHECKPOINT_FORMAT!r}); "
            "pass a model.pt written by anogan train"
        )
    if record.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint version {record.get('version')!r}, this anogan reads "
            f"version {CHECKPOINT_VERSION}"
        )
    return record


def random_state() -> dict[str, Any]:
    """torch's CPU random state and, where CUDA is in use, the current GPU's, for a checkpoint.

    NOTE: only the current GPU's: under torchrun each rank draws on its own GPU from a stream
    equal on all ranks, and reading every GPU's state would open a context on each of them.
    """
    state: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_random_state(state: dict[str, Any]) -> None:
    """Put back a state from `random_state`, so a resumed run draws what it would have drawn."""
    torch.set_rng_state(state["cpu"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if isinstance(cuda, list | tuple):  # written by earlier versions: one state per GPU
            torch.cuda.set_rng_state_all(cuda)
        else:
            torch.cuda.set_rng_state(cuda)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class TrainedModel:
    """A model file read back: the networks, the config they were trained with, calibration.

    Attributes:
        model: the f-AnoGAN triple in eval mode.
        config: the resolved run config.
        calibration: the alarm threshold and heatmap scale (see `anogan.scoring.calibrate`).
        info: training data description, run id, metrics, file hash.
        path: the file read.
    """

    model: FAnoGAN
    config: Config
    calibration: dict[str, Any]
    info: dict[str, Any]
    path: Path


def save_model(
    model: FAnoGAN,
    config: Config,
    calibration: dict[str, Any],
    info: dict[str, Any],
    path: str | Path,
) -> str:
    """Write the trained triple with everything scoring needs; returns the file's sha256."""
    payload = {
        "stage": "model",
        "state": model.state_dict(),
        "config": config_to_dict(config),
        "calibration": calibration,
        "info": info,
    }
    if model.reference is not None:
        payload["reference"] = model.reference.to_dict()
    return save_checkpoint(payload, path)


def load_model(path: str | Path) -> TrainedModel:
    """Read a model file written by `save_model`, or the `model.pt` inside a folder.

    Raises:
        CheckpointError: not an anogan model file, or its weights do not fit its config.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    record = load_checkpoint(path)
    if record.get("stage") != "model":
        raise CheckpointError(
            f"{path}: a {record.get('stage')!r} training checkpoint, not a finished model; "
            "resume the run with --resume to finish it"
        )
    config = config_from_dict(record["config"])
    model = FAnoGAN(config.model, config.data.patch_size)
    try:
        model.load_state_dict(record["state"])
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not match the stored config ({error})") from None
    if "reference" in record:
        model.reference = HealthyReference.from_dict(record["reference"])
    model.eval()
    info = {**record.get("info", {}), "sha256": file_sha256(path)}
    return TrainedModel(model, config, record["calibration"], info, path)
