"""Training quality that needs no downloaded weights, sample grids, and the best-checkpoint choice.

The quality measure is a sliced Wasserstein distance (SWD) between real healthy windows and
generated ones, at several scales of a Gaussian-blurred pyramid: project both sets of flattened
images on random unit directions, sort, and compare the sorted projections. Lower is better;
it falls as samples approach the data and rises when the generator collapses or degrades.
"""

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from anogan import distributed

logger = logging.getLogger(__name__)

SWD_DIRECTIONS = 256  # random projections per scale
SWD_SCALES = 3  # full resolution, 1/2, 1/4
SWD_SCALE_FACTOR = 1000.0  # reported SWD is multiplied by this, for readable numbers


class RunRecorder(Protocol):
    """Where training sends metrics and files (MLflow in `anogan.tracking`)."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...

    def log_artifact(self, path: Path, folder: str | None = None) -> None: ...

    def log_artifacts(self, path: Path, folder: str | None = None) -> None: ...


class LocalRecorder:
    """A recorder that keeps metrics in memory only: for runs without MLflow and for tests."""

    def __init__(self) -> None:
        self.metrics: dict[str, list[tuple[int, float]]] = {}
        self.artifacts: list[tuple[Path, str | None]] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            self.metrics.setdefault(name, []).append((step, float(value)))

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        self.artifacts.append((Path(path), folder))

    def log_artifacts(self, path: Path, folder: str | None = None) -> None:
        self.artifacts.extend((child, folder) for child in sorted(Path(path).iterdir()))


@dataclass
class BestTracker:
    """Keeps the lowest quality value seen and the step it was seen at."""

    value: float = math.inf
    step: int = -1

    def update(self, value: float, step: int) -> bool:
        """Record `value`; True when it is a new best."""
        if value < self.value:
            self.value, self.step = value, step
            return True
        return False


def sliced_wasserstein(
    real: torch.Tensor, fake: torch.Tensor, seed: int = 0, scales: int = SWD_SCALES
) -> float:
    """Multi-scale sliced Wasserstein distance between two sets of images.

    Args:
        real: (N, 1, H, W) in [-1, 1].
        fake: (N, 1, H, W) in [-1, 1], the same N.
        seed: fixes the projection directions so values compare across a run.
        scales: pyramid levels, each half the size of the one before.

    Returns:
        The mean over scales of the distance, times SWD_SCALE_FACTOR.
    """
    if real.shape != fake.shape:
        raise ValueError(f"SWD needs equal shapes, got {tuple(real.shape)} and {tuple(fake.shape)}")
    generator = torch.Generator().manual_seed(seed)
    distances = []
    real, fake = real.detach().float().cpu(), fake.detach().float().cpu()
    for level in range(scales):
        if level > 0:
            real = F.avg_pool2d(real, 2)
            fake = F.avg_pool2d(fake, 2)
        flat_real, flat_fake = real.flatten(1), fake.flatten(1)  # (N, D)
        directions = torch.randn(flat_real.shape[1], SWD_DIRECTIONS, generator=generator)
        directions = directions / directions.norm(dim=0, keepdim=True)  # (D, K) unit columns
        projected_real = (flat_real @ directions).sort(dim=0).values  # (N, K)
        projected_fake = (flat_fake @ directions).sort(dim=0).values
        distances.append((projected_real - projected_fake).abs().mean().item())
    return float(np.mean(distances)) * SWD_SCALE_FACTOR


def progress_bar(total: int, initial: int, description: str) -> tqdm:
    """A progress bar of training steps, shown by rank 0 only."""
    return tqdm(
        total=total,
        initial=initial,
        desc=description,
        unit="it",
        mininterval=2,
        disable=not distributed.is_main(),
    )


def save_grid(images: torch.Tensor, path: str | Path, columns: int = 8) -> Path:
    """Tile images into one grey PNG.

    Args:
        images: (B, 1, H, W) in [-1, 1].
        path: destination PNG.
        columns: images per row.
    """
    batch, _, height, width = images.shape
    rows = math.ceil(batch / columns)
    pad = 2
    canvas = np.full((rows * (height + pad) + pad, columns * (width + pad) + pad), 255, np.uint8)
    pixels = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    for index in range(batch):
        row, column = divmod(index, columns)
        top, left = pad + row * (height + pad), pad + column * (width + pad)
        canvas[top : top + height, left : left + width] = pixels[index, 0]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas).save(path)
    return path
