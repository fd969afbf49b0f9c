"""The trained triple (generator, critic, encoder) and its f-AnoGAN anomaly scores.

For an image x with reconstruction x_hat = G(E(x)) (Schlegl et al., Medical Image Analysis 54,
2019, equation 7):

    A(x) = mean((x - x_hat)^2) + kappa * mean((f(x) - f(x_hat))^2)

with f the critic's last feature map, and the pixel anomaly map |x - x_hat|. Optionally the map
comes from a refined latent: a few gradient steps on that same score, AnoGAN's iterative mapping
(Schlegl et al., IPMI 2017) started from E(x) instead of from noise.

The image term can instead be SSIM's luminance comparison (Wang et al., IEEE TIP 13(4), 2004,
equation 6) of x and x_hat, taken on intensities standardised over the foreground, so that 0 is
the slice's mean: `luminance_dissimilarity`.
"""

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from anogan.config import ImageResidual, ModelConfig
from anogan.models.critic import Critic
from anogan.models.encoder import Encoder
from anogan.models.generator import Generator

if TYPE_CHECKING:
    from anogan.scoring.reference import HealthyReference

logger = logging.getLogger(__name__)

LUMINANCE_SIGMA = 1.5  # pixels: SSIM's Gaussian window (Wang et al. 2004)
LUMINANCE_RADIUS = 5  # pixels: its 11 x 11 support
LUMINANCE_C1 = (0.01 * 2.0) ** 2  # SSIM's C1 = (K1 L)^2, K1 = 0.01, L = 2 for [-1, 1]


class AnomalyOutput(NamedTuple):
    """Per-window results of `FAnoGAN.anomaly`.

    Attributes:
        reconstruction: (B, 1, H, W) in [-1, 1], x_hat: G(E(x)), or G of the refined latent.
        pixel_map: (B, 1, H, W) >= 0, |x - x_hat|, zero outside the mask when one is given.
        image_residual: (B,) mean squared pixel residual, or mean luminance dissimilarity
            (over the mask when given).
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

    Attributes:
        reference: latents and scores of healthy training windows, kept for
            `scoring.reference_k` (`anogan.scoring.reference`); None until training has made
            one. Not a weight: the model file stores it beside the state dict.
    """

    def __init__(self, config: ModelConfig, image_size: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.latent_dim = config.latent_dim
        self.generator = Generator(config.latent_dim, config.channels, image_size)
        self.critic = Critic(config.channels, image_size)
        self.encoder = Encoder(config.latent_dim, config.channels, image_size, config.latent_bound)
        self.reference: HealthyReference | None = None

    def reconstruct(self, images: torch.Tensor) -> torch.Tensor:
        """Args: images: (B, 1, H, W) in [-1, 1]. Returns: G(E(images)), same shape."""
        return self.generator(self.encoder(images))

    def anomaly(
        self,
        images: torch.Tensor,
        kappa: float = 1.0,
        mask: torch.Tensor | None = None,
        refine_steps: int = 0,
        refine_step_size: float = 0.05,
        residual: ImageResidual = "squared",
    ) -> AnomalyOutput:
        """Reconstruct windows and score them.

        Args:
            images: (B, 1, H, W) in [-1, 1].
            kappa: weight of the feature residual.
            mask: optional (B, 1, H, W) in {0, 1}: the foreground; residuals are taken inside
                it only. A window with an empty mask gets an image residual of zero.
            refine_steps: gradient steps that move the latent from E(x) to lower the score;
                the map and the reconstruction then come from the refined latent, the scores
                still from E(x) (0: everything from G(E(x))).
            refine_step_size: Adam's step size for them, in latent units.
            residual: the image term, `squared` or `luminance` (`image_residuals`); the
                refinement always lowers the squared score, whose gradient is smooth.

        Returns:
            AnomalyOutput with per-window maps and scores.
        """
        latent = self.encoder(images)
        output = anomaly_from_reconstruction(
            images, self.generator(latent), self.critic.features, kappa, mask, residual=residual
        )
        if refine_steps <= 0:
            return output
        # NOTE: refinement sharpens the maps but blunts the scores: on brain MRI 10 steps
        # raised pixel ROC AUC from 0.827 to 0.911 and lowered image ROC AUC from 0.843 to
        # 0.820 (G learns to draw part of each tumour), so the scores stay those of G(E(x)).
        refined = self.generator(
            self.refine_latent(images, latent, kappa, mask, refine_steps, refine_step_size)
        )
        pixel_map, _ = image_residuals(images, refined, mask)
        return output._replace(reconstruction=refined, pixel_map=pixel_map)

    def refine_latent(
        self,
        images: torch.Tensor,
        latent: torch.Tensor,
        kappa: float,
        mask: torch.Tensor | None,
        steps: int,
        step_size: float,
    ) -> torch.Tensor:
        """Lower each window's own anomaly score by Adam steps on its latent vector.

        Each window keeps the best latent it visited, so its refined score is never above the
        score of its starting latent. Each window's latent moves on its own score only (Adam
        is elementwise and the critic's layer norm is per sample), so a window's result does
        not depend on its batch. The networks' weights are not touched and collect no
        gradients.

        Args:
            images: (B, 1, H, W) in [-1, 1].
            latent: (B, Z), the starting point, usually E(images).
            kappa, mask: as for `anomaly`.
            steps: Adam steps.
            step_size: Adam's learning rate.

        Returns:
            (B, Z) in [-latent_bound, latent_bound], detached.
        """
        if any(parameter.is_inference() for parameter in self.generator.parameters()):
            raise RuntimeError(
                "latent refinement differentiates the generator, whose weights were moved or "
                "made under torch.inference_mode; place the model outside inference mode"
            )
        bound = self.encoder.latent_bound
        # Scoring runs under inference mode, whose tensors cannot join a graph: clone them out.
        with torch.inference_mode(False), torch.enable_grad():
            images = images.clone()
            mask = None if mask is None else mask.clone()
            with torch.no_grad():
                image_features = self.critic.features(images).float()  # (B, D), fixed
            latent = latent.detach().clone().requires_grad_(True)
            best_latent = latent.detach().clone()
            best_score = torch.full((latent.shape[0],), float("inf"), device=latent.device)
            optimiser = torch.optim.Adam([latent], lr=step_size)
            for step in range(steps + 1):
                # The last pass only scores the final latent: no graph for it.
                with torch.set_grad_enabled(step < steps):
                    score = anomaly_from_reconstruction(
                        images,
                        self.generator(latent),
                        self.critic.features,
                        kappa,
                        mask,
                        image_features,
                    ).score  # (B,)
                with torch.no_grad():
                    better = score < best_score
                    best_score = torch.where(better, score, best_score)
                    best_latent[better] = latent[better]
                if step == steps:
                    break
                (latent.grad,) = torch.autograd.grad(score.sum(), latent)
                optimiser.step()
                with torch.no_grad():
                    latent.clamp_(-bound, bound)
        return best_latent


def image_residuals(
    images: torch.Tensor,
    reconstruction: torch.Tensor,
    mask: torch.Tensor | None = None,
    residual: ImageResidual = "squared",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pixel map |x - x_hat| and the image term of each window.

    Args:
        images: (B, 1, H, W).
        reconstruction: (B, 1, H, W).
        mask: optional (B, 1, H, W) in {0, 1}; the map is zero outside it and the mean is
            taken inside it (zero for an empty mask).
        residual: `squared`, the mean of (x - x_hat)^2, or `luminance`, the mean of
            `luminance_dissimilarity`.

    Returns:
        (B, 1, H, W) map and (B,) image term.
    """
    difference = images - reconstruction.float()
    pixel_map = difference.abs()
    if residual == "luminance":
        per_pixel = luminance_dissimilarity(images, reconstruction)
    else:
        per_pixel = difference.square()
    if mask is None:
        return pixel_map, per_pixel.mean(dim=(1, 2, 3))
    area = mask.sum(dim=(1, 2, 3)).clamp(min=1.0)
    return pixel_map * mask, (per_pixel * mask).sum(dim=(1, 2, 3)) / area


def luminance_dissimilarity(images: torch.Tensor, reconstruction: torch.Tensor) -> torch.Tensor:
    """One minus SSIM's luminance comparison of local means, per pixel.

        d = (mu_x - mu_r)^2 / (mu_x^2 + mu_r^2 + C1)

    with mu the Gaussian-weighted local mean (sigma 1.5 px, 11 x 11) and C1 SSIM's constant for
    a range of 2. d is 0 where the local means agree, 1 where one of them is 0 and up to 2 where
    they have opposite signs; it does not change when both images are scaled together.

    NOTE: it is meant for intensities standardised over the foreground (`data.intensity:
    zscore`), where 0 is the slice's mean: d then asks whether each region is reconstructed as
    much brighter or darker than the slice's mean as it is. On intensities shifted to be
    positive, as SSIM usually takes them, it ranked brain MRI tumours far worse (image ROC AUC
    0.73-0.81 against 0.945-0.955 on four trained models; benchmarks/results.md).

    Args:
        images: (B, 1, H, W) in [-1, 1].
        reconstruction: (B, 1, H, W) in [-1, 1].

    Returns:
        (B, 1, H, W) in [0, 2], fp32.
    """
    mean_image = _gaussian_blur(images.float())
    mean_reconstruction = _gaussian_blur(reconstruction.float())
    numerator = (mean_image - mean_reconstruction).square()
    return numerator / (mean_image.square() + mean_reconstruction.square() + LUMINANCE_C1)


def _gaussian_blur(images: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) -> the same, each pixel the Gaussian-weighted mean of its neighbourhood."""
    offsets = torch.arange(-LUMINANCE_RADIUS, LUMINANCE_RADIUS + 1, device=images.device)
    weights = torch.exp(-(offsets.float() ** 2) / (2.0 * LUMINANCE_SIGMA**2))
    weights = weights / weights.sum()  # (2R + 1,)
    padded = F.pad(images, (LUMINANCE_RADIUS,) * 4, mode="replicate")
    rows = F.conv2d(padded, weights.view(1, 1, -1, 1))  # (B, 1, H, W + 2R)
    return F.conv2d(rows, weights.view(1, 1, 1, -1))  # (B, 1, H, W)


def anomaly_from_reconstruction(
    images: torch.Tensor,
    reconstruction: torch.Tensor,
    features: Callable[[torch.Tensor], torch.Tensor],
    kappa: float = 1.0,
    mask: torch.Tensor | None = None,
    image_features: torch.Tensor | None = None,
    residual: ImageResidual = "squared",
) -> AnomalyOutput:
    """The f-AnoGAN score of windows given their reconstructions.

    Args:
        images: (B, 1, H, W) in [-1, 1].
        reconstruction: (B, 1, H, W), G(E(images)).
        features: the critic's f(.), (B, 1, H, W) -> (B, D).
        kappa: weight of the feature residual.
        mask: optional (B, 1, H, W) in {0, 1}; residuals inside it only.
        image_features: optional (B, D) f(images), already computed (then only the
            reconstruction goes through the critic).
        residual: the image term, `squared` or `luminance` (`image_residuals`).
    """
    pixel_map, image_residual = image_residuals(images, reconstruction, mask, residual)
    if image_features is None:
        # One critic pass over both halves: its layer norm is per sample, so this equals two.
        both = features(torch.cat([images, reconstruction.to(images.dtype)])).float()  # (2B, D)
        image_features, reconstruction_features = both.chunk(2)
    else:
        reconstruction_features = features(reconstruction.to(images.dtype)).float()
    feature_residual = (image_features - reconstruction_features).square().mean(dim=1)
    score = image_residual + kappa * feature_residual
    return AnomalyOutput(reconstruction, pixel_map, image_residual, feature_residual, score)
