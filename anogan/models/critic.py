"""WGAN critic: image -> unbounded realness score, plus the features of the feature residual."""

import logging

import torch
from torch import nn

from anogan.models.blocks import base_resolution, down_trunk

logger = logging.getLogger(__name__)


class Critic(nn.Module):
    """images (B, 1, H, W) in [-1, 1] -> scores (B,), linear output (no sigmoid).

    Args:
        channels: feature maps per resolution, finest first.
        image_size: H = W of the input.
    """

    def __init__(self, channels: tuple[int, ...], image_size: int) -> None:
        super().__init__()
        base = base_resolution(image_size, channels)
        self.trunk = down_trunk(channels)
        self.activation = nn.ReLU()
        self.feature_dim = channels[-1] * base * base
        self.head = nn.Linear(self.feature_dim, 1)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """f(x) of the f-AnoGAN feature residual: the flattened last feature map.

        Args:
            images: (B, 1, H, W) in [-1, 1].

        Returns:
            (B, C_coarsest * h * h).
        """
        return self.activation(self.trunk(images)).flatten(1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Args: images: (B, 1, H, W). Returns: (B,) critic scores, higher for real."""
        return self.head(self.features(images)).squeeze(1)
