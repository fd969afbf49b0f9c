"""ROC and precision-recall curves of a model beside its trivial baselines, as PNG files."""

import logging
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

logger = logging.getLogger(__name__)


def plot_curves(
    scores: np.ndarray,
    labels: np.ndarray,
    baselines: Mapping[str, np.ndarray],
    signs: Mapping[str, float],
    folder: str | Path,
) -> list[Path]:
    """Write `roc.png` and `pr.png` with the model's curve and each baseline's.

    Args:
        scores: (N,) model scores, higher is more anomalous.
        labels: (N,) 1 anomalous, 0 healthy; both classes must be present.
        baselines: name -> (N,) raw statistic.
        signs: name -> +1 or -1, the direction in which the statistic flags anomalies.
        folder: where to write.

    Returns:
        The two paths.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    curves = {"f-AnoGAN": np.asarray(scores, float)}
    for name, values in baselines.items():
        direction = "lower" if signs.get(name, 1.0) < 0 else "higher"
        curves[f"pixel {name} ({direction} = anomalous)"] = signs.get(name, 1.0) * np.asarray(
            values, float
        )

    roc_figure, roc_axes = plt.subplots(figsize=(5, 5))
    pr_figure, pr_axes = plt.subplots(figsize=(5, 5))
    for name, values in curves.items():
        style = {"linewidth": 2.0} if name == "f-AnoGAN" else {"linewidth": 1.0, "alpha": 0.7}
        false_positive, true_positive, _ = roc_curve(labels, values)
        roc_axes.plot(false_positive, true_positive, label=name, **style)
        precision, recall, _ = precision_recall_curve(labels, values)
        pr_axes.plot(recall, precision, label=name, **style)
    roc_axes.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    roc_axes.set(xlabel="false-positive rate", ylabel="sensitivity", title="Image ROC")
    pr_axes.set(xlabel="recall", ylabel="precision", title="Image precision-recall")
    paths = []
    for figure, axes, name in ((roc_figure, roc_axes, "roc.png"), (pr_figure, pr_axes, "pr.png")):
        axes.legend(fontsize=7, loc="lower right" if name == "roc.png" else "lower left")
        figure.tight_layout()
        figure.savefig(folder / name, dpi=100)
        plt.close(figure)
        paths.append(folder / name)
    return paths
