"""Healthy training windows: random patches centred on the foreground, never on air.

The slices of a training set are prepared once (model grid, mask, intensities in [-1, 1]) and
held in memory; each batch draws slices at random and crops a window from each with MONAI's
`RandCropByPosNegLabel`, its centre on a foreground pixel. Where the slice is no larger than the
window, the slice is the window.
"""

import logging

import numpy as np
import torch
from monai.transforms import RandCropByPosNegLabel

logger = logging.getLogger(__name__)


class PatchSampler:
    """Draws (B, 1, P, P) windows from prepared healthy slices.

    Args:
        images: (N, 1, H, W) in [-1, 1].
        masks: (N, 1, H, W) in {0, 1}, the foreground.
        patch_size: P, the window side; H and W must be at least P.
        seed: seeds the choice of slices and crop positions.
    """

    def __init__(
        self, images: torch.Tensor, masks: torch.Tensor, patch_size: int, seed: int
    ) -> None:
        count, _, height, width = images.shape
        if count == 0:
            raise ValueError("PatchSampler needs at least one slice")
        if min(height, width) < patch_size:
            raise ValueError(f"slices of {height}x{width} are smaller than the {patch_size} window")
        self.images = images
        self.masks = masks
        self.patch_size = patch_size
        self.whole_slices = (height, width) == (patch_size, patch_size)
        self.generator = np.random.default_rng(seed)
        self.cropper = RandCropByPosNegLabel(
            spatial_size=(patch_size, patch_size), pos=1.0, neg=0.0, num_samples=1
        )
        self.cropper.set_random_state(seed=seed)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def sample(self, batch_size: int) -> torch.Tensor:
        """A batch of windows, slices drawn uniformly with replacement.

        Returns:
            (B, 1, P, P) float32 in [-1, 1].
        """
        indices = self.generator.integers(0, len(self), size=batch_size)
        if self.whole_slices:
            return self.images[torch.from_numpy(indices)]
        windows = []
        for index in indices:
            image, mask = self.images[index], self.masks[index]
            label = mask if mask.any() else None
            crop = self.cropper(image, label=label if label is not None else torch.ones_like(mask))
            windows.append(torch.as_tensor(crop[0]))
        return torch.stack(windows)

    def state(self) -> dict:
        """The random state, for resuming a run where it stopped."""
        return {"numpy": self.generator.bit_generator.state}

    def load_state(self, state: dict) -> None:
        self.generator.bit_generator.state = state["numpy"]
