"""Generator: latent vector -> one-channel image, after the residual WGAN-GP recipe."""

import itertools
import logging

import torch
from torch import nn

from anogan.models.blocks import UpBlock, base_resolution

logger = logging.getLogger(__name__)


class Generator(nn.Module):
    """z (B, Z) standard normal -> images (B, 1, H, W) in [-1, 1].

    A linear layer makes a (B, C_coarsest, h, h) map; UpBlocks double it through the
    widths of `channels` from coarsest to finest, and a last transposed convolution doubles it
    once more into one channel, so that H = W = image_size.

    Args:
        latent_dim: Z.
        channels: feature maps per resolution, finest first (as in ModelConfig).
        image_size: H = W of the output.
    """

    def __init__(self, latent_dim: int, channels: tuple[int, ...], image_size: int) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.base = base_resolution(image_size, channels)
        coarse_to_fine = tuple(reversed(channels))
        self.first_channels = coarse_to_fine[0]
        self.project = nn.Linear(latent_dim, self.first_channels * self.base * self.base)
        self.blocks = nn.Sequential(
            *(UpBlock(c_in, c_out) for c_in, c_out in itertools.pairwise(coarse_to_fine))
        )
        # The last doubling goes straight to one channel, as in DCGAN-style f-AnoGAN
        # generators: a full-width block at the finest resolution would double the cost.
        self.to_image = nn.Sequential(
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(),
            nn.ConvTranspose2d(channels[0], 1, 4, stride=2, padding=1),
            nn.Tanh(),
        )

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """Args: latent: (B, Z). Returns: (B, 1, H, W) in [-1, 1]."""
        batch = latent.shape[0]
        features = self.project(latent).view(batch, self.first_channels, self.base, self.base)
        return self.to_image(self.blocks(features))
