"""`anogan evaluate`: the quality figures of a trained model on any labelled set.

The labelled slices are read and prepared as training prepared them, scored as `anogan score`
scores them, and compared with the model's own calibrated threshold (set on healthy slices
at training time, never on the evaluated ones). Beside the model: the trivial per-image
baselines. Localisation: every healthy slice of the set is copied with one synthetic lesion
per kind and size (see `anogan.data.dataset.load_lesioned_slices`).
"""

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from anogan.config import Config
from anogan.data.dataset import SliceSet, load_lesioned_slices, load_slices
from anogan.data.lesions import LESION_KINDS
from anogan.data.sources import DataItem, DataSet
from anogan.evaluation.quality import (
    BOOTSTRAP_REPEATS,
    DetectorFigures,
    ModelDetector,
    baseline_figures,
    evaluate_detector,
    quality_tables,
)
from anogan.models.fanogan import FAnoGAN

logger = logging.getLogger(__name__)

LESION_RADII = (0.03, 0.06, 0.1)  # synthetic lesion radii, fractions of a slice's longer side
RESULTS_JSON = "evaluation.json"
RESULTS_MARKDOWN = "evaluation.md"


@dataclass
class EvaluationSets:
    """The slices a detector is judged on: labelled ones, and lesioned healthy copies."""

    slices: SliceSet
    lesioned: SliceSet | None

    def counts(self) -> dict[str, int]:
        labels = self.slices.labels.numpy()
        counts = {"healthy": int((labels == 0).sum()), "anomalous": int((labels == 1).sum())}
        for subtype in sorted(set(np.asarray(self.slices.subtypes)[labels == 1])):
            counts[f"anomalous/{subtype}"] = int(
                ((labels == 1) & (np.asarray(self.slices.subtypes) == subtype)).sum()
            )
        counts["lesioned"] = len(self.lesioned) if self.lesioned is not None else 0
        return counts


def load_evaluation_sets(
    items: Sequence[DataItem], config: Config, lesions: bool, seed: int
) -> EvaluationSets:
    """Read labelled items, and lesioned copies of their healthy ones when `lesions`."""
    slices = load_slices(items, config.data, "evaluation slices")
    lesioned = None
    healthy = [item for item in items if item.label == 0]
    if lesions and healthy:
        lesioned = load_lesioned_slices(
            healthy, config.data, LESION_KINDS, LESION_RADII, seed, "healthy slices to lesion"
        )
    return EvaluationSets(slices, lesioned)


def evaluate_model(
    model: FAnoGAN,
    config: Config,
    threshold: float | None,
    sets: EvaluationSets,
    repeats: int = BOOTSTRAP_REPEATS,
    seed: int = 0,
) -> list[DetectorFigures]:
    """The model's figures, then those of the trivial baselines, on the same slices.

    Without a threshold (None) the figures that need one, sensitivity and the observed
    false-positive rate, are left out.
    """
    detector = ModelDetector(model, config.scoring, config.compute, threshold)
    figures = [evaluate_detector(detector, sets.slices, sets.lesioned, repeats, seed)]
    figures.extend(baseline_figures(sets.slices, repeats, seed, sets.lesioned))
    return figures


def write_results(
    out_dir: Path,
    figures: Sequence[DetectorFigures],
    counts: dict[str, int],
    extra: dict | None = None,
) -> str:
    """Write evaluation.json and evaluation.md into `out_dir`; returns the markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = quality_tables(figures)
    payload = {"counts": counts, "detectors": [item.to_dict() for item in figures]}
    payload.update(extra or {})
    (out_dir / RESULTS_JSON).write_text(json.dumps(payload, indent=2))
    (out_dir / RESULTS_MARKDOWN).write_text(markdown)
    return markdown


def describe_counts(dataset: DataSet, counts: dict[str, int]) -> str:
    """One line: what was evaluated."""
    subtypes = ", ".join(
        f"{key.split('/', 1)[1]} {value}" for key, value in counts.items() if "/" in key
    )
    return (
        f"{dataset.root}: {counts['healthy']} healthy and {counts['anomalous']} anomalous "
        f"slices ({subtypes or 'no subtypes'}); {counts['lesioned']} with synthetic lesions"
    )
