"""Build `report/index.html` of a scoring run from its outputs alone.

Reads summary.json, failures.csv and previews/*.npz under the output folder (what `anogan
score` wrote), so `anogan report DIR` rebuilds the same page later. The page is one
self-contained file: images as PNG data URIs, charts as inline SVG, no external resource,
and every value that came from an input (DICOM text, file names) is escaped by Jinja2's
autoescaping; the only unescaped parts are the style, the script and SVG built here from
numbers.
"""

import logging
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from anogan.errors import AnoganError
from anogan.export import read_failures, read_summary
from anogan.report.overlays import colour_bar, grey, overlay, png_data_uri
from anogan.report.template import CONTENT_SECURITY_POLICY, SCRIPT, STYLE, TEMPLATE
from anogan.scoring.calibrate import REFERENCE_QUANTILES
from anogan.scoring.series import SERIES_TOP_K

logger = logging.getLogger(__name__)

REPORT_FILE = Path("report") / "index.html"
MIN_IMAGE_SIDE = 224  # small slices are enlarged (whole multiples) to at least this
CHART_WIDTH, CHART_HEIGHT, CHART_MARGIN = 320, 140, 24  # SVG chart size in px
# Series shown with their slice images: every flagged one, and the highest scoring others up
# to this rank, so that a run over thousands of series still gives a page a browser opens.
DETAILED_SERIES = 50


def build_report(out_dir: Path) -> Path:
    """Write `out_dir/report/index.html`; returns its path.

    Raises:
        AnoganError: `out_dir` holds no scoring summary, or a preview file is unreadable.
    """
    out_dir = Path(out_dir)
    summary = read_summary(out_dir)
    calibration = summary["calibration"]
    quantiles = np.asarray(calibration["healthy_quantiles"], dtype=np.float64)
    series = sorted(summary["series"], key=lambda item: item["score"], reverse=True)
    entries = [
        _series_entry(out_dir, item, calibration, quantiles, rank < DETAILED_SERIES)
        for rank, item in enumerate(series)
    ]
    if len(series) > DETAILED_SERIES:
        logger.info("Report shows slice images of flagged series and the top %d", DETAILED_SERIES)

    environment = jinja2.Environment(autoescape=True, undefined=jinja2.ChainableUndefined)
    html = environment.from_string(TEMPLATE).render(
        csp=CONTENT_SECURITY_POLICY,
        style=STYLE,
        script=SCRIPT,
        run=summary,
        counts=summary["counts"],
        model=summary["model"],
        calibration=calibration,
        failures=read_failures(out_dir),
        series=entries,
        series_top_k=SERIES_TOP_K,
        detailed_series=DETAILED_SERIES,
        colour_bar=png_data_uri(colour_bar(256, 16)),
    )
    path = out_dir / REPORT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    logger.info("Report: %s", path)
    return path


def _series_entry(
    out_dir: Path,
    item: dict[str, Any],
    calibration: dict[str, Any],
    quantiles: np.ndarray,
    detailed: bool,
) -> dict[str, Any]:
    threshold = float(calibration["threshold"])
    metadata = item.get("metadata", {})
    patient = " ".join(
        value for value in (metadata.get("PatientName"), metadata.get("PatientID")) if value
    )
    return {
        **item,
        "patient": patient,
        "percentile": healthy_percentile(item["score"], quantiles),
        "distribution": _distribution_svg(quantiles, item["score"], threshold),
        "profile": _profile_svg(item["slice_scores"], threshold),
        "previews": (
            _previews(out_dir, item, calibration) if detailed or item["flagged_slices"] else []
        ),
    }


def healthy_percentile(score: float, quantiles: np.ndarray) -> float:
    """Percent of healthy validation slices scoring below `score`, from stored quantiles."""
    levels = np.asarray(REFERENCE_QUANTILES, dtype=np.float64)
    if len(quantiles) != len(levels):
        levels = np.linspace(0.0, 1.0, len(quantiles))
    return float(100.0 * np.interp(score, quantiles, levels, left=0.0, right=1.0))


def _previews(out_dir: Path, item: dict[str, Any], calibration: dict) -> list[dict[str, Any]]:
    path = out_dir / item["preview_file"]
    if not path.is_file():
        return []
    try:
        with np.load(path) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except (OSError, ValueError, KeyError) as error:
        raise AnoganError(f"{path}: unreadable preview file ({error})") from None
    heatmap_max = float(calibration["heatmap_max"])
    threshold = float(calibration["threshold"])
    previews = []
    for number, index in enumerate(arrays["slices"]):
        image = arrays["images"][number].astype(np.float32)
        reconstruction = arrays["reconstructions"][number].astype(np.float32)
        pixel_map = arrays["maps"][number].astype(np.float32)
        score = float(arrays["scores"][number])
        previews.append(
            {
                "slice": int(index),
                "score": score,
                "flagged": score > threshold,
                "image": png_data_uri(grey(image), MIN_IMAGE_SIDE),
                "reconstruction": png_data_uri(grey(reconstruction), MIN_IMAGE_SIDE),
                "overlay": png_data_uri(overlay(image, pixel_map, heatmap_max), MIN_IMAGE_SIDE),
            }
        )
    return previews


def _distribution_svg(quantiles: np.ndarray, score: float, threshold: float) -> str:
    """Cumulative healthy score curve with the threshold and this series' score marked."""
    low = min(float(quantiles[0]), score, threshold)
    high = max(float(quantiles[-1]), score, threshold)
    span = max(high - low, 1e-12)
    low, high = low - 0.05 * span, high + 0.05 * span
    levels = np.linspace(0.0, 1.0, len(quantiles))
    points = " ".join(
        f"{_x(value, low, high):.1f},{_y(level):.1f}"
        for value, level in zip(quantiles, levels, strict=True)
    )
    score_x, threshold_x = _x(score, low, high), _x(threshold, low, high)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_WIDTH}" height="{CHART_HEIGHT}"'
        f' viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" role="img">'
        f"{_axes()}"
        f'<polyline points="{points}" fill="none" stroke="#777" stroke-width="2"/>'
        f'<line x1="{threshold_x:.1f}" y1="{_y(0):.1f}" x2="{threshold_x:.1f}" y2="{_y(1):.1f}"'
        ' stroke="#333" stroke-dasharray="4 3"/>'
        f'<line x1="{score_x:.1f}" y1="{_y(0):.1f}" x2="{score_x:.1f}" y2="{_y(1):.1f}"'
        ' stroke="#c00" stroke-width="2"/>'
        f'<text x="{CHART_MARGIN}" y="{CHART_HEIGHT - 6}" font-size="10">{low:.3g}</text>'
        f'<text x="{CHART_WIDTH - CHART_MARGIN}" y="{CHART_HEIGHT - 6}" font-size="10"'
        f' text-anchor="end">{high:.3g}</text>'
        "</svg>"
    )


def _profile_svg(slice_scores: list[float], threshold: float) -> str:
    """Score per slice as bars, red above the threshold, with the threshold dashed."""
    values = np.asarray(slice_scores, dtype=np.float64)
    top = max(float(values.max(initial=0.0)), threshold) * 1.1 or 1.0
    inner = CHART_WIDTH - 2 * CHART_MARGIN
    step = inner / max(len(values), 1)
    bars = []
    for index, value in enumerate(values):
        height = (CHART_HEIGHT - 2 * CHART_MARGIN) * max(value, 0.0) / top
        colour = "#c00" if value > threshold else "#6a8caf"
        bars.append(
            f'<rect x="{CHART_MARGIN + index * step:.2f}" y="{_y(0) - height:.2f}"'
            f' width="{max(step * 0.9, 0.5):.2f}" height="{height:.2f}" fill="{colour}"/>'
        )
    threshold_y = _y(0) - (CHART_HEIGHT - 2 * CHART_MARGIN) * threshold / top
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{CHART_WIDTH}" height="{CHART_HEIGHT}"'
        f' viewBox="0 0 {CHART_WIDTH} {CHART_HEIGHT}" role="img">'
        f"{_axes()}{''.join(bars)}"
        f'<line x1="{CHART_MARGIN}" y1="{threshold_y:.1f}" x2="{CHART_WIDTH - CHART_MARGIN}"'
        f' y2="{threshold_y:.1f}" stroke="#333" stroke-dasharray="4 3"/>'
        f'<text x="{CHART_MARGIN}" y="{CHART_HEIGHT - 6}" font-size="10">slice 0</text>'
        f'<text x="{CHART_WIDTH - CHART_MARGIN}" y="{CHART_HEIGHT - 6}" font-size="10"'
        f' text-anchor="end">{max(len(values) - 1, 0)}</text>'
        "</svg>"
    )


def _axes() -> str:
    return (
        f'<rect x="0" y="0" width="{CHART_WIDTH}" height="{CHART_HEIGHT}" fill="#fafafa"/>'
        f'<line x1="{CHART_MARGIN}" y1="{_y(0):.1f}" x2="{CHART_WIDTH - CHART_MARGIN}"'
        f' y2="{_y(0):.1f}" stroke="#999"/>'
    )


def _x(value: float, low: float, high: float) -> float:
    return CHART_MARGIN + (CHART_WIDTH - 2 * CHART_MARGIN) * (value - low) / (high - low)


def _y(level: float) -> float:
    return CHART_HEIGHT - CHART_MARGIN - (CHART_HEIGHT - 2 * CHART_MARGIN) * level
