"""Residual blocks shared by the generator, critic and encoder.

Up-sampling blocks use batch norm (the generator is never differentiated twice); down-sampling
blocks use layer norm, since batch norm couples the samples of a batch and breaks the
per-sample gradient penalty of WGAN-GP (Gulrajani et al. 2017, section 4).
"""

import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)


class UpBlock(nn.Module):
    """Residual block that doubles the resolution: (B, C_in, H, W) -> (B, C_out, 2H, 2W).

    Main path: batch norm, ReLU, 4x4 transposed convolution with stride 2; shortcut: nearest
    up-sampling and a 1x1 convolution. One strided convolution a block keeps the cost near the
    published DCGAN-style f-AnoGAN at the same widths.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(),
            nn.ConvTranspose2d(in_channels, out_channels, 4, stride=2, padding=1),
        )
        self.shortcut = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(in_channels, out_channels, 1, bias=False),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.main(features) + self.shortcut(features)


class DownBlock(nn.Module):
    """Residual block that halves the resolution: (B, C_in, H, W) -> (B, C_out, H/2, W/2).

    Main path: layer norm, ReLU, 4x4 convolution with stride 2; shortcut: 2x2 average pooling
    and a 1x1 convolution. The first block of a trunk (`first=True`) sees raw pixels and skips
    the leading normalisation and activation.
    """

    def __init__(self, in_channels: int, out_channels: int, first: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if not first:
            layers += [nn.GroupNorm(1, in_channels), nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(in_channels, out_channels, 4, stride=2, padding=1))
        self.main = nn.Sequential(*layers)
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(2), nn.Conv2d(in_channels, out_channels, 1, bias=False)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.main(features) + self.shortcut(features)


def down_trunk(channels: tuple[int, ...]) -> nn.Sequential:
    """Stack of DownBlocks from one image channel through `channels`, finest first."""
    blocks = []
    in_channels = 1
    for index, out_channels in enumerate(channels):
        blocks.append(DownBlock(in_channels, out_channels, first=index == 0))
        in_channels = out_channels
    return nn.Sequential(*blocks)


def base_resolution(image_size: int, channels: tuple[int, ...]) -> int:
    """Side of the coarsest feature map: image_size halved once per block.

    Raises:
        ValueError: image_size is not divisible by 2 ** len(channels).
    """
    factor = 2 ** len(channels)
    if not channels or image_size % factor or image_size < factor:
        raise ValueError(
            f"image size {image_size} must be a positive multiple of 2**{len(channels)} "
            f"= {factor} for {len(channels)} resolution blocks"
        )
    return image_size // factor
