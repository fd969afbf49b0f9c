"""A plain convolutional autoencoder: the baseline a user would otherwise train.

It is built from the f-AnoGAN networks' own parts, an encoder trunk to the latent vector and
the generator as decoder, so that at the same widths it has the size of the encoder and
generator together, and it is trained end to end on the reconstruction error alone. It offers
the same `anomaly` call as `FAnoGAN`, with no feature term, so that it is scored by the same
sliding-window code.
"""

import logging

import torch
from torch import nn

from anogan.config import ImageResidual, ModelConfig
from anogan.models.encoder import Encoder
from anogan.models.fanogan import AnomalyOutput, image_residuals
from anogan.models.generator import Generator

logger = logging.getLogger(__name__)


class AutoEncoder(nn.Module):
    """images (B, 1, H, W) in [-1, 1] -> reconstructions of the same shape.

    Args:
        config: network widths and latent size, as for FAnoGAN.
        image_size: H = W of the windows.
    """

    def __init__(self, config: ModelConfig, image_size: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.encoder = Encoder(config.latent_dim, config.channels, image_size, config.latent_bound)
        self.decoder = Generator(config.latent_dim, config.channels, image_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Args: images: (B, 1, H, W). Returns: reconstructions (B, 1, H, W)."""
        return self.decoder(self.encoder(images))

    def anomaly(
        self,
        images: torch.Tensor,
        kappa: float = 0.0,
        mask: torch.Tensor | None = None,
        refine_steps: int = 0,
        refine_step_size: float = 0.0,
        residual: ImageResidual = "squared",
    ) -> AnomalyOutput:
        """Reconstruction error per window; `kappa` and refinement are ignored (there is no
        critic, and no latent prior to refine towards).

        Args:
            images: (B, 1, H, W) in [-1, 1].
            kappa: unused, for the FAnoGAN signature.
            mask: optional (B, 1, H, W) foreground; the error is taken inside it only.
            refine_steps, refine_step_size: unused, for the FAnoGAN signature.
            residual: the error, `squared` or `luminance`, as for FAnoGAN.
        """
        reconstruction = self(images).float()
        pixel_map, image_residual = image_residuals(images, reconstruction, mask, residual)
        zeros = torch.zeros_like(image_residual)
        return AnomalyOutput(reconstruction, pixel_map, image_residual, zeros, image_residual)
