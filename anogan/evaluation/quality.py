"""Detection quality of one or more detectors on a labelled set, with bootstrap intervals.

For each detector: image ROC AUC and average precision, overall and per anomaly subtype
(each subtype against all healthy slices), sensitivity at its calibrated threshold and the
false-positive rate observed on the healthy slices, each with a stratified bootstrap 95%
interval; two checks that the score is no proxy for how the data was acquired: the rank
correlation of its score with the raw pixel standard deviation on healthy slices, and its AUC
among slices of like standard deviation; and, on synthetic lesions with known masks, pixel ROC
AUC, pixel average precision and the best Dice over thresholds, and how well the slice score
tells each lesioned copy from healthy slices and from its own healthy slice (the same
acquisition, so no source confound can help). The trivial per-image baselines (pixel
standard deviation, mean, 99th percentile) are evaluated the same way, each in its better
direction as chosen on the same data, which flatters them.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from scipy.stats import rankdata
from sklearn.metrics import average_precision_score
from torch import nn

from anogan.config import ComputeConfig, ScoringConfig
from anogan.data.dataset import SliceSet
from anogan.evaluation.metrics import (
    BASELINES,
    contrast_correlation,
    equal_contrast_auc,
    lesion_detection,
    pixel_metrics,
)
from anogan.models.fanogan import FAnoGAN
from anogan.scoring.scorer import score_slices

logger = logging.getLogger(__name__)

BOOTSTRAP_REPEATS = 1000
CONFIDENCE = 0.95
OVERALL = "all"  # the subtype key of figures over every anomalous slice


class Detector(Protocol):
    """Anything that scores prepared slices: higher is more anomalous."""

    name: str
    threshold: float | None  # calibrated alarm threshold, None for the trivial baselines

    def score(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
        """(S, 1, H, W) images and foreground masks -> (S,) scores and (S, 1, H, W) maps."""
        ...


@dataclass
class ModelDetector:
    """A trained network scored window by window, as `anogan score` scores it.

    Attributes:
        model: anything with FAnoGAN's `anomaly` call and `image_size` (the f-AnoGAN triple,
            or the autoencoder baseline).
        scoring: overlap, aggregation, kappa, masking.
        compute: device and layout (scores are fp32, see WindowStream).
        threshold: the calibrated alarm threshold, or None.
        name: how tables name it.
    """

    model: FAnoGAN | nn.Module
    scoring: ScoringConfig
    compute: ComputeConfig
    threshold: float | None
    name: str = "f-AnoGAN"

    def score(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[np.ndarray, torch.Tensor]:
        scores = score_slices(self.model, images, masks, self.scoring, self.compute)
        return scores.score.double().numpy(), scores.pixel_maps


@dataclass(frozen=True)
class Estimate:
    """A figure and its bootstrap interval."""

    value: float
    low: float
    high: float

    def text(self, digits: int = 3) -> str:
        if np.isnan(self.value):
            return "n/a"
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


@dataclass
class DetectorFigures:
    """Image-level figures of one detector; `by_subtype` keys are subtypes and OVERALL."""

    name: str
    roc_auc: dict[str, Estimate]
    average_precision: dict[str, Estimate]
    sensitivity: dict[str, Estimate] = field(default_factory=dict)
    false_positive_rate: Estimate | None = None
    threshold: float | None = None
    contrast_spearman: float = float("nan")
    equal_contrast_auc: float = float("nan")
    localisation: dict[str, dict[str, float]] = field(default_factory=dict)
    lesion_detection: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "threshold": self.threshold,
            "contrast_spearman": self.contrast_spearman,
            "equal_contrast_auc": self.equal_contrast_auc,
            "lesion_detection": self.lesion_detection,
            "roc_auc": {key: value.to_dict() for key, value in self.roc_auc.items()},
            "average_precision": {
                key: value.to_dict() for key, value in self.average_precision.items()
            },
            "sensitivity": {key: value.to_dict() for key, value in self.sensitivity.items()},
            "false_positive_rate": (
                self.false_positive_rate.to_dict() if self.false_positive_rate else None
            ),
            "localisation": self.localisation,
        }

    def flat_metrics(self, prefix: str) -> dict[str, float]:
        """`prefix/figure[/subtype]` -> value, for MLflow (intervals as `_low`/`_high`)."""
        flat: dict[str, float] = {
            f"{prefix}/contrast_spearman": self.contrast_spearman,
            f"{prefix}/equal_contrast_auc": self.equal_contrast_auc,
            **{f"{prefix}/{name}": value for name, value in self.lesion_detection.items()},
        }
        tables = {
            "roc_auc": self.roc_auc,
            "average_precision": self.average_precision,
            "sensitivity": self.sensitivity,
        }
        if self.false_positive_rate is not None:
            tables["false_positive_rate"] = {OVERALL: self.false_positive_rate}
        for figure, table in tables.items():
            for subtype, estimate in table.items():
                key = f"{prefix}/{figure}" + ("" if subtype == OVERALL else f"/{subtype}")
                flat.update({key: estimate.value, f"{key}_low": estimate.low})
                flat[f"{key}_high"] = estimate.high
        for condition, values in self.localisation.items():
            for name, value in values.items():
                flat[f"{prefix}/{name}/{condition}"] = value
        return {key: float(value) for key, value in flat.items() if np.isfinite(value)}


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney ROC AUC (ties count one half); NaN unless both classes are present."""
    positives = labels == 1
    count_positive, count_negative = int(positives.sum()), int((~positives).sum())
    if count_positive == 0 or count_negative == 0:
        return float("nan")
    ranks = rankdata(scores)
    rank_sum = ranks[positives].sum() - count_positive * (count_positive + 1) / 2
    return float(rank_sum / (count_positive * count_negative))


def image_figures(
    name: str,
    scores: np.ndarray,
    labels: np.ndarray,
    subtypes: Sequence[str],
    threshold: float | None,
    repeats: int = BOOTSTRAP_REPEATS,
    seed: int = 0,
) -> DetectorFigures:
    """AUC, AP, sensitivity and observed false-positive rate with stratified bootstrap CIs.

    The bootstrap resamples healthy slices and each subtype's slices separately, with
    replacement, keeping every group's size, and takes the 2.5th and 97.5th percentiles.

    Args:
        name: the detector's name.
        scores: (N,) higher is more anomalous.
        labels: (N,) 1 anomalous, 0 healthy.
        subtypes: N subtype names; only those of anomalous slices matter.
        threshold: the calibrated alarm threshold, or None (no sensitivity or FPR then).
        repeats: bootstrap resamples.
        seed: fixes the resamples.
    """
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels, np.int64)
    subtype_array = np.asarray(list(subtypes), dtype=object)
    healthy = np.flatnonzero(labels == 0)
    groups = {OVERALL: np.flatnonzero(labels == 1)}
    for subtype in sorted(set(subtype_array[labels == 1]) - {""}):
        groups[str(subtype)] = np.flatnonzero((labels == 1) & (subtype_array == subtype))
    # Strata of the bootstrap: each named subtype, and the anomalous slices that name none
    # (those count in OVERALL only).
    named = [subtype for subtype in groups if subtype != OVERALL]
    strata = [groups[subtype] for subtype in named]
    unnamed = np.setdiff1d(groups[OVERALL], np.concatenate(strata) if strata else [])
    if unnamed.size:
        strata.append(unnamed)

    def figures(healthy_index: np.ndarray, anomalous: dict[str, np.ndarray]) -> dict[str, float]:
        values: dict[str, float] = {}
        healthy_scores = scores[healthy_index]
        if threshold is not None and healthy_index.size:
            values["fpr"] = float(np.mean(healthy_scores > threshold))
        for subtype, index in anomalous.items():
            if not index.size:
                continue
            group_scores = np.concatenate([healthy_scores, scores[index]])
            truth = np.concatenate([np.zeros(healthy_index.size), np.ones(index.size)])
            if healthy_index.size:
                values[f"auc/{subtype}"] = roc_auc(group_scores, truth)
                values[f"ap/{subtype}"] = float(average_precision_score(truth, group_scores))
            if threshold is not None:
                values[f"sens/{subtype}"] = float(np.mean(scores[index] > threshold))
        return values

    point = figures(healthy, groups)
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {key: [] for key in point}
    for _ in range(repeats):
        resampled_healthy = rng.choice(healthy, healthy.size) if healthy.size else healthy
        drawn = [rng.choice(index, index.size) for index in strata]
        resampled = {OVERALL: np.concatenate(drawn) if drawn else groups[OVERALL]}
        resampled.update(zip(named, drawn, strict=False))  # unnamed, if any, comes last
        for key, value in figures(resampled_healthy, resampled).items():
            samples[key].append(value)

    def estimate(key: str) -> Estimate:
        if not samples[key]:
            return Estimate(point[key], float("nan"), float("nan"))
        tail = 100 * (1 - CONFIDENCE) / 2
        low, high = np.nanpercentile(samples[key], [tail, 100 - tail])
        return Estimate(point[key], float(low), float(high))

    def table(prefix: str) -> dict[str, Estimate]:
        return {
            subtype: estimate(f"{prefix}/{subtype}")
            for subtype in groups
            if f"{prefix}/{subtype}" in point
        }

    return DetectorFigures(
        name=name,
        roc_auc=table("auc"),
        average_precision=table("ap"),
        sensitivity=table("sens"),
        false_positive_rate=estimate("fpr") if "fpr" in point else None,
        threshold=threshold,
    )


def evaluate_detector(
    detector: Detector,
    slices: SliceSet,
    lesioned: SliceSet | None = None,
    repeats: int = BOOTSTRAP_REPEATS,
    seed: int = 0,
) -> DetectorFigures:
    """All figures of one detector on a labelled set, and on synthetic lesions if given.

    Args:
        detector: what to evaluate.
        slices: labelled slices the detector never trained or calibrated on.
        lesioned: healthy slices with synthetic lesions and their masks (see
            `anogan.data.dataset.load_lesioned_slices`), or None.
        repeats: bootstrap resamples.
        seed: fixes the resamples and the pixel sample.
    """
    scores, _ = detector.score(slices.images, slices.masks)
    labels = slices.labels.numpy()
    figures = image_figures(
        detector.name, scores, labels, slices.subtypes, detector.threshold, repeats, seed
    )
    _contrast_checks(figures, scores, slices)
    if lesioned is not None:
        lesion_scores, maps = detector.score(lesioned.images, lesioned.masks)
        figures.localisation = _pixel_figures(maps, lesioned, seed)
        figures.lesion_detection = _lesion_detection(scores, slices, lesion_scores, lesioned)
    return figures


def baseline_figures(
    slices: SliceSet,
    repeats: int = BOOTSTRAP_REPEATS,
    seed: int = 0,
    lesioned: SliceSet | None = None,
) -> list[DetectorFigures]:
    """Figures of each trivial per-image statistic, in its better direction on this data,
    and on the lesioned copies of its healthy slices when given (in that same direction)."""
    labels = slices.labels.numpy()
    results = []
    for name in BASELINES:
        values = np.asarray(slices.raw_statistics[name], np.float64)
        sign = -1.0 if roc_auc(values, labels) < 0.5 else 1.0  # NaN (one class): as it is
        label = f"pixel {name}" + (" (lower = anomalous)" if sign < 0 else "")
        figures = image_figures(label, sign * values, labels, slices.subtypes, None, repeats, seed)
        _contrast_checks(figures, sign * values, slices)
        if lesioned is not None:
            copies = sign * np.asarray(lesioned.raw_statistics[name], np.float64)
            figures.lesion_detection = _lesion_detection(sign * values, slices, copies, lesioned)
        results.append(figures)
    return results


def localisation_figures(
    detector: Detector, lesioned: SliceSet, seed: int = 0
) -> dict[str, dict[str, float]]:
    """Pixel ROC AUC, AP and best Dice per lesion subtype and over all of them.

    Pixels inside each slice's foreground count; the figures pool every slice of a subtype.
    """
    if lesioned.lesion_masks is None:
        return {}
    _, maps = detector.score(lesioned.images, lesioned.masks)
    return _pixel_figures(maps, lesioned, seed)


def _pixel_figures(
    maps: torch.Tensor, lesioned: SliceSet, seed: int
) -> dict[str, dict[str, float]]:
    """`localisation_figures` of (M, 1, H, W) maps already drawn for the lesioned slices."""
    if lesioned.lesion_masks is None:
        return {}
    maps_array, truth, foreground = (
        maps.numpy(),
        lesioned.lesion_masks.numpy(),
        lesioned.masks.numpy(),
    )
    subtypes = np.asarray(lesioned.subtypes, dtype=object)
    results = {OVERALL: pixel_metrics(maps_array, truth, foreground, seed)}
    for subtype in sorted(set(subtypes)):
        chosen = subtypes == subtype
        results[str(subtype)] = pixel_metrics(
            maps_array[chosen], truth[chosen], foreground[chosen], seed
        )
    return {key: value for key, value in results.items() if value}


def quality_tables(figures: Sequence[DetectorFigures]) -> str:
    """Markdown tables: image figures of every detector, then their localisation figures."""
    subtypes = sorted({key for item in figures for key in item.roc_auc if key != OVERALL})
    header = ["detector", "image ROC AUC", "average precision"]
    header += [f"AUC {subtype}" for subtype in subtypes]
    header += ["sensitivity at threshold", "observed FPR", "contrast Spearman"]
    header += ["AUC at equal contrast", "lesioned copies: AUC / above own slice"]
    rows = [header, ["---"] * len(header)]
    for item in figures:
        row = [item.name, _cell(item.roc_auc), _cell(item.average_precision)]
        row += [_cell(item.roc_auc, subtype, 2) for subtype in subtypes]
        row.append(_cell(item.sensitivity, digits=2))
        fpr = item.false_positive_rate
        row.append(fpr.text(3) if fpr else "")
        row.append(f"{item.contrast_spearman:+.2f}")
        row.append(f"{item.equal_contrast_auc:.3f}")
        lesions = item.lesion_detection
        row.append(
            f"{lesions['lesion_roc_auc']:.3f} / {lesions['lesion_above_own']:.2f}"
            if lesions
            else ""
        )
        rows.append(row)
    text = "\n".join("| " + " | ".join(row) + " |" for row in rows)

    located = [item for item in figures if item.localisation]
    if located:
        conditions = sorted({key for item in located for key in item.localisation})
        conditions = [OVERALL] + [key for key in conditions if key != OVERALL]
        header = ["lesions", *(f"{item.name} pixel AUC / AP / best Dice" for item in located)]
        rows = [header, ["---"] * len(header)]
        for condition in conditions:
            row = [condition]
            for item in located:
                values = item.localisation.get(condition, {})
                row.append(
                    " / ".join(
                        f"{values[key]:.3f}" if key in values else "n/a"
                        for key in ("pixel_roc_auc", "pixel_average_precision", "pixel_best_dice")
                    )
                )
            rows.append(row)
        text += "\n\n" + "\n".join("| " + " | ".join(row) + " |" for row in rows)
    return text + "\n"


def _contrast_checks(figures: DetectorFigures, scores: np.ndarray, slices: SliceSet) -> None:
    """Fill in the contrast Spearman (healthy slices) and the AUC at equal contrast."""
    labels, pixel_std = slices.labels.numpy(), slices.raw_statistics["std"]
    healthy = labels == 0
    figures.contrast_spearman = contrast_correlation(scores[healthy], pixel_std[healthy])
    figures.equal_contrast_auc = equal_contrast_auc(scores, labels, pixel_std)


def _lesion_detection(
    scores: np.ndarray, slices: SliceSet, lesion_scores: np.ndarray, lesioned: SliceSet
) -> dict[str, float]:
    """`lesion_detection` of copies made from the healthy slices of `slices`."""
    healthy = slices.labels.numpy() == 0
    known = {
        source: float(score)
        for source, score, is_healthy in zip(slices.sources, scores, healthy, strict=True)
        if is_healthy
    }
    return lesion_detection(known, np.asarray(lesion_scores, float), _origins(lesioned, known))


def _origins(lesioned: SliceSet, known: dict[str, float]) -> list[str]:
    """The source of the healthy slice each lesioned copy was made from.

    A copy is named `SOURCE#INDEX-SUBTYPE` (`anogan.data.dataset.load_lesioned_slices`); its
    slice is `SOURCE#INDEX` in a volume, or `SOURCE` where the input held one slice.
    """
    origins = []
    for source, subtype in zip(lesioned.sources, lesioned.subtypes, strict=True):
        slice_name = source.removesuffix(f"-{subtype}")
        origins.append(slice_name if slice_name in known else slice_name.rpartition("#")[0])
    return origins


def _cell(table: dict[str, Estimate], key: str = OVERALL, digits: int = 3) -> str:
    return table[key].text(digits) if key in table else ""
