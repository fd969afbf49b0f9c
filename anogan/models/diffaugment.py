"""Differentiable augmentation (DiffAugment) for GANs trained on a few hundred images.

After Zhao et al., "Differentiable Augmentation for Data-Efficient GAN Training" (NeurIPS
2020): the same random, differentiable transforms go on real and generated images wherever
the critic sees them, so the critic cannot memorise the small real set and gradients still
reach the generator. Grey images: brightness and contrast only (no saturation).
"""

import logging
from collections.abc import Callable, Sequence

import torch

logger = logging.getLogger(__name__)

BRIGHTNESS_RANGE = 0.5  # added offset in [-0.25, 0.25] for images in [-1, 1] (range 2)
CONTRAST_RANGE = (0.5, 1.5)  # multiplicative factor around the image mean
TRANSLATION_RATIO = 0.125  # largest shift as a fraction of the side
CUTOUT_RATIO = 0.5  # side of the erased square as a fraction of the image side


def diff_augment(images: torch.Tensor, policy: Sequence[str]) -> torch.Tensor:
    """Apply each named augmentation in turn, with fresh randomness per sample.

    Args:
        images: (B, C, H, W) in [-1, 1].
        policy: names from "color", "translation", "cutout".

    Returns:
        (B, C, H, W), differentiable with respect to `images`.
    """
    for name in policy:
        if name not in AUGMENTATIONS:
            raise ValueError(f"unknown DiffAugment policy {name!r}; known: {sorted(AUGMENTATIONS)}")
        for augmentation in AUGMENTATIONS[name]:
            images = augmentation(images)
    return images


def _brightness(images: torch.Tensor) -> torch.Tensor:
    batch = images.shape[0]
    offset = (torch.rand(batch, 1, 1, 1, device=images.device) - 0.5) * BRIGHTNESS_RANGE
    return images + offset.to(images.dtype)


def _contrast(images: torch.Tensor) -> torch.Tensor:
    batch = images.shape[0]
    low, high = CONTRAST_RANGE
    factor = torch.rand(batch, 1, 1, 1, device=images.device) * (high - low) + low
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return (images - mean) * factor.to(images.dtype) + mean


def _translation(images: torch.Tensor) -> torch.Tensor:
    batch, _, height, width = images.shape
    shift_h = int(height * TRANSLATION_RATIO + 0.5)
    shift_w = int(width * TRANSLATION_RATIO + 0.5)
    device = images.device
    offset_y = torch.randint(-shift_h, shift_h + 1, (batch, 1, 1), device=device)
    offset_x = torch.randint(-shift_w, shift_w + 1, (batch, 1, 1), device=device)
    grid_b, grid_y, grid_x = torch.meshgrid(
        torch.arange(batch, device=device),
        torch.arange(height, device=device),
        torch.arange(width, device=device),
        indexing="ij",
    )
    # Shifted-in pixels come from a one-pixel pad of the image's corner value (air).
    grid_y = torch.clamp(grid_y + offset_y + 1, 0, height + 1)
    grid_x = torch.clamp(grid_x + offset_x + 1, 0, width + 1)
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1), mode="replicate")
    padded = padded.permute(0, 2, 3, 1)  # (B, H + 2, W + 2, C)
    return padded[grid_b, grid_y, grid_x].permute(0, 3, 1, 2).contiguous()


def _cutout(images: torch.Tensor) -> torch.Tensor:
    batch, _, height, width = images.shape
    size_h = int(height * CUTOUT_RATIO + 0.5)
    size_w = int(width * CUTOUT_RATIO + 0.5)
    device = images.device
    centre_y = torch.randint(0, height + (1 - size_h % 2), (batch, 1, 1), device=device)
    centre_x = torch.randint(0, width + (1 - size_w % 2), (batch, 1, 1), device=device)
    rows = torch.arange(height, device=device).view(1, height, 1)
    columns = torch.arange(width, device=device).view(1, 1, width)
    inside = ((rows - centre_y).abs() < size_h // 2) & ((columns - centre_x).abs() < size_w // 2)
    keep = (~inside).unsqueeze(1).to(images.dtype)  # (B, 1, H, W)
    # Erased squares take the darkest value, air, rather than zero (mid-grey in [-1, 1]).
    return images * keep + (1.0 - keep) * -1.0


AUGMENTATIONS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], ...]] = {
    "color": (_brightness, _contrast),
    "translation": (_translation,),
    "cutout": (_cutout,),
}
