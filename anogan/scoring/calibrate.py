"""The alarm threshold and the heatmap colour scale, both set on healthy validation slices.

The threshold is the (1 - target_fpr) quantile of healthy validation scores, so that about
`target_fpr` of healthy slices raise an alarm. The heatmap scale is one upper bound for the
whole run, fixed here and never rescaled per image, so that a colour means the same residual
on every slice a clinician sees.
"""

import logging
from dataclasses import asdict, dataclass

import numpy as np
import torch

logger = logging.getLogger(__name__)

HEATMAP_PERCENTILE = 99.5  # of healthy foreground residuals: the top of the colour scale
REFERENCE_QUANTILES = tuple(float(q) for q in np.linspace(0.0, 1.0, 101))  # stored score curve


@dataclass(frozen=True)
class Calibration:
    """What scoring needs from calibration, stored with the model.

    Attributes:
        threshold: slice scores above it are flagged.
        target_fpr: the false-positive rate asked for.
        observed_fpr: the share of the calibration slices above the threshold.
        heatmap_max: residual shown at the top of the colour scale.
        healthy_count: calibration slices used.
        healthy_quantiles: the healthy score distribution at REFERENCE_QUANTILES, for reports.
    """

    threshold: float
    target_fpr: float
    observed_fpr: float
    heatmap_max: float
    healthy_count: int
    healthy_quantiles: tuple[float, ...]

    def to_dict(self) -> dict:
        return {**asdict(self), "healthy_quantiles": list(self.healthy_quantiles)}

    @classmethod
    def from_dict(cls, values: dict) -> "Calibration":
        return cls(**{**values, "healthy_quantiles": tuple(values["healthy_quantiles"])})


def calibrate(
    healthy_scores: torch.Tensor,
    healthy_maps: torch.Tensor,
    healthy_masks: torch.Tensor,
    target_fpr: float,
) -> Calibration:
    """Set the threshold and heatmap scale from healthy validation slices.

    Args:
        healthy_scores: (N,) slice scores of healthy slices the model never trained on.
        healthy_maps: (N, 1, H, W) their pixel anomaly maps.
        healthy_masks: (N, 1, H, W) their foreground masks.
        target_fpr: wanted share of healthy slices above the threshold, in (0, 1).
    """
    if not 0.0 < target_fpr < 1.0:
        raise ValueError(f"target_fpr must lie in (0, 1), got {target_fpr}")
    scores = healthy_scores.double().numpy()
    if scores.size < 1:
        raise ValueError("calibration needs at least one healthy validation slice")
    if scores.size < round(1.0 / target_fpr):
        logger.warning(
            "Only %d healthy calibration slices: a %.0f%% false-positive threshold is coarse",
            scores.size,
            100 * target_fpr,
        )
    threshold = float(np.quantile(scores, 1.0 - target_fpr, method="higher"))
    observed = float(np.mean(scores > threshold))
    residuals = healthy_maps[healthy_masks > 0].double().numpy()
    heatmap_max = float(np.percentile(residuals, HEATMAP_PERCENTILE)) if residuals.size else 1.0
    calibration = Calibration(
        threshold=threshold,
        target_fpr=float(target_fpr),
        observed_fpr=observed,
        heatmap_max=max(heatmap_max, 1e-6),
        healthy_count=int(scores.size),
        healthy_quantiles=tuple(float(v) for v in np.quantile(scores, REFERENCE_QUANTILES)),
    )
    logger.info(
        "Threshold %.5f flags %.1f%% of %d healthy calibration slices (target %.1f%%)",
        threshold,
        100 * observed,
        scores.size,
        100 * target_fpr,
    )
    return calibration
