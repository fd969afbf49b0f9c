"""Image and pixel detection metrics, the trivial baselines beside them, and a contrast check.

Every figure here is computed on validation data the model never trained on. The threshold
comes from healthy validation slices too, so the false-positive rate at the threshold is also
given cross-fitted: threshold from one half of the healthy slices, rate measured on the other.
"""

import logging
from collections.abc import Mapping

import numpy as np
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, roc_auc_score

logger = logging.getLogger(__name__)

BASELINES = ("std", "mean", "p99")  # per-image raw-intensity statistics
MAX_PIXELS = 2_000_000  # pixels sampled for pixel-level metrics, to bound memory and time


def image_metrics(
    scores: np.ndarray, labels: np.ndarray, threshold: float, target_fpr: float, seed: int = 0
) -> dict[str, float]:
    """ROC AUC, AP, and sensitivity and specificity at the threshold.

    Args:
        scores: (N,) higher is more anomalous.
        labels: (N,) 1 anomalous, 0 healthy.
        threshold: the calibrated alarm threshold.
        target_fpr: the false-positive rate the threshold was set for (for the cross-fit).
        seed: fixes the halves of the cross-fit.

    Returns:
        Metrics; the ROC and AP entries only where both classes are present.
    """
    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    flagged = scores > threshold
    healthy = labels == 0
    metrics = {
        "specificity": float(np.mean(~flagged[healthy])) if healthy.any() else float("nan"),
        "crossfit_fpr": _crossfit_fpr(scores[healthy], target_fpr, seed),
    }
    if (labels == 1).any():
        metrics["sensitivity"] = float(np.mean(flagged[labels == 1]))
    if healthy.any() and (labels == 1).any():
        metrics["roc_auc"] = float(roc_auc_score(labels, scores))
        metrics["average_precision"] = float(average_precision_score(labels, scores))
    return metrics


def baseline_metrics(
    statistics: Mapping[str, np.ndarray], labels: np.ndarray
) -> dict[str, dict[str, float]]:
    """ROC AUC of each trivial per-image statistic, in its better direction.

    The direction is chosen on the same data, which flatters the baselines: a model's margin
    over them is a conservative one.

    Returns:
        name -> {"roc_auc", "average_precision", "sign"}; sign -1 means lower is anomalous.
    """
    labels = np.asarray(labels, int)
    if not ((labels == 0).any() and (labels == 1).any()):
        return {}
    results = {}
    for name in BASELINES:
        values = np.asarray(statistics[name], float)
        auc = roc_auc_score(labels, values)
        sign = 1.0 if auc >= 0.5 else -1.0
        results[name] = {
            "roc_auc": float(max(auc, 1.0 - auc)),
            "average_precision": float(average_precision_score(labels, sign * values)),
            "sign": sign,
        }
    return results


def pixel_metrics(
    maps: np.ndarray, lesion_masks: np.ndarray, foreground: np.ndarray, seed: int = 0
) -> dict[str, float]:
    """Pixel ROC AUC, AP and the best Dice over thresholds, inside the foreground.

    Args:
        maps: (N, 1, H, W) pixel anomaly maps.
        lesion_masks: (N, 1, H, W) in {0, 1}; healthy slices all zero.
        foreground: (N, 1, H, W) in {0, 1}; only these pixels count.
        seed: fixes the pixel sample when there are more than MAX_PIXELS.
    """
    inside = foreground > 0
    values, truth = maps[inside].astype(np.float64), lesion_masks[inside] > 0
    if not truth.any() or truth.all():
        return {}
    if values.size > MAX_PIXELS:
        chosen = np.random.default_rng(seed).choice(values.size, MAX_PIXELS, replace=False)
        values, truth = values[chosen], truth[chosen]
    return {
        "pixel_roc_auc": float(roc_auc_score(truth, values)),
        "pixel_average_precision": float(average_precision_score(truth, values)),
        "pixel_best_dice": best_dice(values, truth),
    }


def best_dice(values: np.ndarray, truth: np.ndarray, steps: int = 100) -> float:
    """The highest Dice of `values > t` against `truth` over quantile thresholds t."""
    best = 0.0
    positives = truth.sum()
    for threshold in np.unique(np.quantile(values, np.linspace(0.5, 0.999, steps))):
        predicted = values > threshold
        overlap = np.logical_and(predicted, truth).sum()
        best = max(best, 2.0 * overlap / (predicted.sum() + positives))
    return float(best)


def contrast_correlation(scores: np.ndarray, pixel_std: np.ndarray) -> float:
    """Spearman rank correlation of scores with the raw pixel standard deviation.

    Computed on healthy slices: a score that tracks it measures contrast, not anomaly.
    """
    if len(scores) < 3:
        return float("nan")
    return float(spearmanr(scores, pixel_std).statistic)


def _crossfit_fpr(healthy_scores: np.ndarray, target_fpr: float, seed: int) -> float:
    """Mean false-positive rate of a threshold set on one half, measured on the other."""
    if healthy_scores.size < 4:
        return float("nan")
    order = np.random.default_rng(seed).permutation(healthy_scores.size)
    halves = np.array_split(healthy_scores[order], 2)
    rates = []
    for fit, held in ((halves[0], halves[1]), (halves[1], halves[0])):
        threshold = np.quantile(fit, 1.0 - target_fpr, method="higher")
        rates.append(np.mean(held > threshold))
    return float(np.mean(rates))
