"""The trained triple (generator, critic, encoder) and its f-AnoGAN anomaly scores.

For an image x with reconstruction x_hat = G(E(x)) (Schlegl et al., Medical Image Analysis 54,
2019, equation 7):

    A(x) = mean((x - x_hat)^2) + kappa * mean((f(x) - f(x_hat))^2)

with f the critic's last feature map, and the pixel anomaly map |x - x_hat|.
"""

import logging
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from anogan.config import ModelConfig
from anogan.models.critic import Critic
from anogan.models.encoder import Encoder
from anogan.models.generator import Generator

logger = logging.getLogger(__name__)


class AnomalyOutput(NamedTuple):
    """Per-window results of `FAnoGAN.anomaly`.

    Attributes:
        reconstruction: (B, 1, H, W) in [-1, 1], G(E(x)).
        pixel_map: (B, 1, H, W) >= 0, |x - x_hat|, zero outside the mask when one is given.
        image_residual: (B,) mean squared pixel residual (over the mask when given).
        feature_residual: (B,) mean squared critic-feature residual.
        score: (B,) image_residual + kappa * feature_residual.
    """

    reconstruction: torch.Tensor
    pixel_map: torch.Tensor
    image_residual: torch.Tensor
    feature_residual: torch.Tensor
    score: torch.Tensor


class FAnoGAN(nn.Module):
    """Generator, critic and encoder of one image size, and the anomaly score they define.

    Args:
        config: network widths and latent size.
        image_size: H = W of the windows the networks take.
    """

    def __init__(self, config: ModelConfig, image_size: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.latent_dim = config.latent_dim
        self.generator = Generator(config.latent_dim, config.channels, image_size)
        self.critic = Critic(config.channels, image_size)
        self.encoder = Encoder(config.latent_dim, config.channels, image_size, config.latent_bound)

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Args: images: (B, 1, H, W) in [-1, 1]. Returns: G(E(images)), same shape."""
        return self.generator(self.encoder(images))

    def anomaly(
        self, images: torch.Tensor, kappa: float = 1.0, mask: torch.Tensor | None = None
    ) -> AnomalyOutput:
        """Reconstruct windows and score them.

        Args:
            images: (B, 1, H, W) in [-1, 1].
            kappa: weight of the feature residual.
            mask: optional (B, 1, H, W) in {0, 1}: the foreground; residuals are taken inside
                it only. A window with an empty mask gets an image residual of zero.

        Returns:
            AnomalyOutput with per-window maps and scores.
        """
        reconstruction = self.reconstruct(images)
        return anomaly_from_reconstruction(
            images, reconstruction, self.critic.features, kappa, mask
        )


def image_residuals(
    images: torch.Tensor, reconstruction: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pixel map |x - x_hat| and the mean squared residual per window.

    Args:
        images: (B, 1, H, W).
        reconstruction: (B, 1, H, W).
        mask: optional (B, 1, H, W) in {0, 1}; the map is zero outside it and the mean is
            taken inside it (zero for an empty mask).

    Returns:
        (B, 1, H, W) map and (B,) mean squared residual.
    """
    residual = images - reconstruction.float()
    pixel_map = residual.abs()
    if mask is None:
        return pixel_map, residual.square().mean(dim=(1, 2, 3))
    area = mask.sum(dim=(1, 2, 3)).clamp(min=1.0)
    return pixel_map * mask, (residual.square() * mask).sum(dim=(1, 2, 3)) / area


def anomaly_from_reconstruction(
    images: torch.Tensor,
    reconstruction: torch.Tensor,
    features: Callable[[torch.Tensor], torch.Tensor],
    kappa: float = 1.0,
    mask: torch.Tensor | None = None,
) -> AnomalyOutput:
    """The f-AnoGAN score of windows given their reconstructions.

    Args:
        images: (B, 1, H, W) in [-1, 1].
        reconstruction: (B, 1, H, W), G(E(images)).
        features: the critic's f(.), (B, 1, H, W) -> (B, D).
        kappa: weight of the feature residual.
        mask: optional (B, 1, H, W) in {0, 1}; residuals inside it only.
    """
    pixel_map, image_residual = image_residuals(images, reconstruction, mask)
    # One critic pass over both halves: its layer norm is per sample, so this equals two.
    both = features(torch.cat([images, reconstruction.to(images.dtype)])).float()  # (2B, D)
    image_features, reconstruction_features = both.chunk(2)
    feature_residual = (image_features - reconstruction_features).square().mean(dim=1)
    score = image_residual + kappa * feature_residual
    return AnomalyOutput(reconstruction, pixel_map, image_residual, feature_residual, score)
