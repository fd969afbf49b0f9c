"""Encoder: image -> latent vector, the inverse map trained by izi_f."""

import logging

import torch
from torch import nn

from anogan.models.blocks import base_resolution, down_trunk

logger = logging.getLogger(__name__)


class Encoder(nn.Module):
    """images (B, 1, H, W) in [-1, 1] -> latent (B, Z) in (-latent_bound, latent_bound).

    A critic-like trunk, a linear layer and latent_bound * tanh: bounded like the original
    f-AnoGAN encoder, but scaled to cover a standard normal's bulk rather than only (-1, 1).
    """

    def __init__(
        self, latent_dim: int, channels: tuple[int, ...], image_size: int, latent_bound: float
    ) -> None:
        super().__init__()
        base = base_resolution(image_size, channels)
        self.latent_bound = latent_bound
        self.trunk = down_trunk(channels)
        self.head = nn.Sequential(
            nn.ReLU(), nn.Flatten(), nn.Linear(channels[-1] * base**2, latent_dim)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Args: images: (B, 1, H, W). Returns: (B, Z)."""
        return self.latent_bound * torch.tanh(self.head(self.trunk(images)))
