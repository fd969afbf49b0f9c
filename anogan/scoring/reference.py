"""The healthy reference: what healthy training windows like a given window score.

A window's f-AnoGAN score is high wherever the generator cannot draw it. For healthy anatomy the
generator rarely saw (on brain MRI: sagittal and coronal slices among mostly axial ones) that
score is as high as a tumour's. The reference keeps the encoder's latent vector and the two
score terms of up to `REFERENCE_WINDOWS` healthy training windows, scored as given and mirrored.
With `scoring.reference_k` set, a window's score becomes its f-AnoGAN score minus the mean score
of the k training windows nearest to it in latent space: what it scores above healthy windows the
encoder places beside it. `anogan.scoring.scorer.build_reference` makes one at the end of
training; the model file keeps it.
"""

import logging
from dataclasses import dataclass
from typing import Any

import torch

from anogan.config import ImageResidual, ScoringConfig
from anogan.errors import ConfigError

logger = logging.getLogger(__name__)

REFERENCE_WINDOWS = 4096  # training windows kept at most: 2 MiB of latents at Z = 128


@dataclass(frozen=True)
class HealthyReference:
    """Latents and score terms of healthy training windows.

    Attributes:
        latents: (N, Z) E(x) of each window, as given (never mirrored).
        image_residual: (N, 2) the image term of each window as given and mirrored.
        feature_residual: (N, 2) the feature term, likewise.
        masked: whether the terms were taken inside the foreground only.
        mask_erosion: pixels by which that foreground was shrunk.
        residual: the image term they hold, `squared` or `luminance`.
    """

    latents: torch.Tensor
    image_residual: torch.Tensor
    feature_residual: torch.Tensor
    masked: bool
    mask_erosion: int
    residual: ImageResidual = "squared"

    def __len__(self) -> int:
        return self.latents.shape[0]

    def window_scores(self, kappa: float, flip: bool) -> torch.Tensor:
        """(N,) each window's score as the scorer would take it with this kappa and flip."""
        scores = self.image_residual + kappa * self.feature_residual  # (N, 2)
        return scores.mean(dim=1) if flip else scores[:, 0]

    def check(self, config: ScoringConfig) -> None:
        """Refuse a scoring config whose residuals differ from those the reference holds.

        Raises:
            ConfigError: `reference_k` above the windows held, or masking, erosion or the
                image term changed since training.
        """
        if config.reference_k > len(self):
            raise ConfigError(
                f"scoring.reference_k is {config.reference_k}, but the model's healthy reference "
                f"holds {len(self)} training windows; set it to at most {len(self)}"
            )
        taken = (self.masked, self.mask_erosion, self.residual)
        asked = (config.masked, config.mask_erosion, config.residual)
        if asked != taken:
            raise ConfigError(
                "scoring.reference_k needs the residuals the reference was taken with: "
                "scoring.masked, scoring.mask_erosion and scoring.residual "
                f"{' / '.join(map(str, taken))}, got {' / '.join(map(str, asked))}; keep those "
                "or set scoring.reference_k=0"
            )

    def to_dict(self) -> dict[str, Any]:
        """Tensors and plain values, for the model file."""
        return {
            "latents": self.latents,
            "image_residual": self.image_residual,
            "feature_residual": self.feature_residual,
            "masked": self.masked,
            "mask_erosion": self.mask_erosion,
            "residual": self.residual,
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> "HealthyReference":
        """The reference `to_dict` wrote, as read back from a model file."""
        return cls(
            latents=record["latents"].float(),
            image_residual=record["image_residual"].double(),
            feature_residual=record["feature_residual"].double(),
            masked=bool(record["masked"]),
            mask_erosion=int(record["mask_erosion"]),
            # Model files from before the option hold squared residuals.
            residual=record.get("residual", "squared"),
        )


class ReferenceLookup:
    """The mean reference score of each window's k nearest training windows.

    Args:
        reference: the healthy reference.
        config: kappa, flip and reference_k (checked against the reference).
    """

    def __init__(self, reference: HealthyReference, config: ScoringConfig) -> None:
        reference.check(config)
        self.latents = reference.latents.float()  # (N, Z)
        self.scores = reference.window_scores(config.kappa, config.flip)  # (N,)
        self.k = config.reference_k

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        """Args: latents: (B, Z) E(x) of windows. Returns: (B,) float64 reference scores."""
        distances = torch.cdist(latents.float(), self.latents)  # (B, N)
        nearest = distances.topk(self.k, dim=1, largest=False).indices  # (B, k)
        return self.scores[nearest].mean(dim=1)
