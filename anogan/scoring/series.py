"""Streaming scoring of whole series: slices in, per-slice results and series summaries out.

Series come from a reader one at a time; each is prepared in small chunks of slices (model
grid, mask, intensities) and its slices are fed to one `WindowStream`, whose batches mix the
windows of neighbouring slices and series. A slice is handed to the sink, back on the input's
pixel grid, as soon as its windows are done, and a series is closed when its last slice is.
Memory therefore holds the series being read, at most one batch of windows and the few
slices they belong to, whatever the number or length of the series.
"""

import heapq
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from anogan.config import ComputeConfig, DataConfig, ScoringConfig
from anogan.data.preprocess import GridTransform, from_model_grid, prepare_slices
from anogan.errors import AnoganError, DataError
from anogan.io.series import Series
from anogan.models.fanogan import FAnoGAN
from anogan.scoring.calibrate import Calibration
from anogan.scoring.scorer import ScoredSlice, WindowStream

logger = logging.getLogger(__name__)

PREPARE_CHUNK = 8  # slices of a series put on the model grid at once
PREVIEW_SLICES = 3  # most anomalous slices of a series kept for the report
# NOTE: a series' score is the mean of its SERIES_TOP_K highest slice scores; 1, the highest
# slice, was chosen on validation series. Phantom series (the test model of
# tests/scoring/phantom.py; 25 healthy series and 25 with a faint lesion over 3 slices) gave
# ROC AUC, top-1 / top-3 / top-5 / mean of all slices: 0.949 / 0.933 / 0.922 / 0.784 for
# 20-slice series, 0.829 / 0.800 / 0.794 / 0.768 for 60-slice series. The mean dilutes a
# lesion of a few slices in a long series; the top slice did at least as well as the top 3
# or 5, and it agrees with the flag: a series is flagged exactly when its score is above the
# slice threshold, so the ranking and the flags never contradict each other. Would belong
# in the config as `scoring.series_top_k`.
SERIES_TOP_K = 1


@dataclass(frozen=True)
class SliceResult:
    """One scored slice on the input's pixel grid.

    Attributes:
        index: slice index in the series.
        source: the file it came from, relative to the input root.
        score: aggregated f-AnoGAN score, higher is more anomalous.
        image_residual: the image term of the score.
        feature_residual: the feature term of the score.
        reference: the healthy reference subtracted from the score (0 when off).
        flagged: the score is above the calibrated threshold.
        pixel_map: (H, W) float32 >= 0, |x - G(E(x))| on the input grid.
        scored: the slice on the model grid, with its image and reconstruction.
        transform: how the slice was put on the model grid.
    """

    index: int
    source: str
    score: float
    image_residual: float
    feature_residual: float
    reference: float
    flagged: bool
    pixel_map: np.ndarray
    scored: ScoredSlice
    transform: GridTransform

    def on_input_grid(self) -> tuple[np.ndarray, np.ndarray]:
        """The model input and its reconstruction, (H, W) float32 in [-1, 1], input grid."""
        stacked = torch.stack([self.scored.image, self.scored.reconstruction])  # (2, 1, h, w)
        back = from_model_grid(stacked, self.transform).clamp(-1.0, 1.0).numpy()
        return back[0, 0], back[1, 0]


@dataclass
class Preview:
    """A slice kept for the report: (H, W) float32 image and reconstruction in [-1, 1], map."""

    index: int
    score: float
    image: np.ndarray
    reconstruction: np.ndarray
    pixel_map: np.ndarray


@dataclass
class SeriesSummary:
    """A finished series, without its pixels.

    Attributes:
        key: the series' number in this run, 0 for the first read.
        series_id: the reader's sanitised identifier.
        kind: the reader that produced it.
        metadata: the reader's sanitised header values.
        shape: (S, H, W) of the series.
        sources: the files of its slices, relative to the input root.
        slice_scores: score of every slice, in slice order.
        flagged_slices: indices of the slices above the threshold.
        score: series score, the mean of its SERIES_TOP_K highest slice scores.
        previews: the PREVIEW_SLICES most anomalous slices, most anomalous first; emptied
            once the sink has closed the series, so that summaries stay small.
        map_max: largest pixel residual of the series.
    """

    key: int
    series_id: str
    kind: str
    metadata: dict[str, Any]
    shape: tuple[int, int, int]
    sources: tuple[str, ...]
    slice_scores: list[float] = field(default_factory=list)
    flagged_slices: list[int] = field(default_factory=list)
    score: float = float("nan")
    previews: list[Preview] = field(default_factory=list)
    map_max: float = 0.0

    @property
    def flagged(self) -> bool:
        return bool(self.flagged_slices)


class ScoringSink(Protocol):
    """Where results go, in order: a series opens, its slices arrive, it closes."""

    def open_series(self, key: int, series: Series) -> None: ...

    def write_slice(self, key: int, series: Series, result: SliceResult) -> None: ...

    def close_series(self, summary: SeriesSummary) -> None: ...

    def discard_series(self, key: int, series: Series, reason: str) -> None: ...

    def failure(self, source: str, reason: str) -> None: ...


@dataclass
class _OpenSeries:
    series: Series
    summary: SeriesSummary
    transforms: dict[int, GridTransform] = field(default_factory=dict)
    remaining: int = 0
    queued: int = 0
    discarded: bool = False
    heap: list[tuple[float, int, Preview]] = field(default_factory=list)


class SeriesScorer:
    """Scores every series of a reader's output into a sink.

    Args:
        model: the trained triple.
        data_config: the model grid and normalisation the model was trained with.
        scoring_config: windows, aggregation and batch size.
        calibration: threshold and heatmap scale stored with the model.
        progress: called with the number of slices finished, for a progress bar.
        compute: device and memory layout of the forward passes (scores stay fp32).
    """

    def __init__(
        self,
        model: FAnoGAN,
        data_config: DataConfig,
        scoring_config: ScoringConfig,
        calibration: Calibration,
        progress: Any = None,
        compute: ComputeConfig | None = None,
    ) -> None:
        self.data_config = data_config
        self.calibration = calibration
        self.stream = WindowStream(model, scoring_config, compute)
        self.progress = progress
        self._open: dict[int, _OpenSeries] = {}
        self._next_key = 0

    def run(self, results: Iterable[Any], sink: ScoringSink) -> list[SeriesSummary]:
        """Score each Series of `results`; anything else is a read failure (source, reason).

        Returns:
            One summary per scored series, in input order.
        """
        summaries: list[SeriesSummary] = []
        for result in results:
            if not isinstance(result, Series):
                sink.failure(str(result.source), str(result.reason))
                continue
            try:
                _check_series(result)
            except DataError as error:
                sink.failure(_first_source(result), str(error))
                continue
            summaries.extend(self._add_series(result, sink))
        summaries.extend(self._deliver(self.stream.flush(), sink))
        return summaries

    def _add_series(self, series: Series, sink: ScoringSink) -> list[SeriesSummary]:
        key = self._next_key
        self._next_key += 1
        summary = SeriesSummary(
            key=key,
            series_id=series.series_id,
            kind=series.kind,
            metadata=dict(series.metadata),
            shape=tuple(int(size) for size in series.pixels.shape),
            sources=tuple(series.sources),
        )
        state = _OpenSeries(series, summary, remaining=series.num_slices)
        self._open[key] = state
        sink.open_series(key, series)
        closed: list[SeriesSummary] = []
        try:
            for start, prepared in _prepared_chunks(series, self.data_config):
                for offset in range(prepared.images.shape[0]):
                    state.transforms[start + offset] = prepared.transform
                    state.queued += 1
                    finished = self.stream.add(
                        (key, start + offset), prepared.images[offset], prepared.masks[offset]
                    )
                    closed.extend(self._deliver(finished, sink))
        except AnoganError as error:
            # Its slices already queued still go through the model; their results are dropped.
            state.discarded = True
            sink.discard_series(key, series, str(error))
            if state.queued == series.num_slices - state.remaining:
                self._open.pop(key)
        return closed

    def _deliver(self, finished: list[ScoredSlice], sink: ScoringSink) -> list[SeriesSummary]:
        closed = []
        for scored in finished:
            key, index = scored.key
            state = self._open[key]
            state.remaining -= 1
            if state.discarded:
                if state.queued == state.summary.shape[0] - state.remaining:
                    self._open.pop(key)
                continue
            result = self._slice_result(state.series, index, scored, state.transforms.pop(index))
            sink.write_slice(key, state.series, result)
            _record(state, result)
            if self.progress is not None:
                self.progress(1)
            if state.remaining == 0:
                closed.append(self._close(key, sink))
        return closed

    def _slice_result(
        self, series: Series, index: int, scored: ScoredSlice, transform: GridTransform
    ) -> SliceResult:
        pixel_map = from_model_grid(scored.pixel_map[None], transform)[0, 0]
        return SliceResult(
            index=index,
            source=series.sources[index],
            score=scored.score,
            image_residual=scored.image_residual,
            feature_residual=scored.feature_residual,
            reference=scored.reference,
            flagged=scored.score > self.calibration.threshold,
            pixel_map=pixel_map.clamp(min=0.0).numpy().astype(np.float32),
            scored=scored,
            transform=transform,
        )

    def _close(self, key: int, sink: ScoringSink) -> SeriesSummary:
        state = self._open.pop(key)
        summary = state.summary
        top = sorted(summary.slice_scores, reverse=True)[:SERIES_TOP_K]
        summary.score = float(np.mean(top))
        summary.previews = [preview for _, _, preview in sorted(state.heap, reverse=True)]
        sink.close_series(summary)
        summary.previews = []
        return summary


def _record(state: _OpenSeries, result: SliceResult) -> None:
    """Keep the slice's score, its flag, and its images if it is among the top slices."""
    summary = state.summary
    summary.slice_scores.append(result.score)
    summary.map_max = max(summary.map_max, float(result.pixel_map.max(initial=0.0)))
    if result.flagged:
        summary.flagged_slices.append(result.index)
    entry_key = (result.score, -result.index)
    if len(state.heap) < PREVIEW_SLICES or entry_key > state.heap[0][:2]:
        image, reconstruction = result.on_input_grid()
        preview = Preview(result.index, result.score, image, reconstruction, result.pixel_map)
        entry = (result.score, -result.index, preview)
        if len(state.heap) < PREVIEW_SLICES:
            heapq.heappush(state.heap, entry)
        else:
            heapq.heapreplace(state.heap, entry)


def _prepared_chunks(series: Series, config: DataConfig) -> Iterator[tuple[int, Any]]:
    bounds = getattr(series, "window", None)
    for start in range(0, series.num_slices, PREPARE_CHUNK):
        pixels = series.pixels[start : start + PREPARE_CHUNK]
        yield start, prepare_slices(pixels, series.spacing, config, bounds)


def _check_series(series: Series) -> None:
    if series.num_slices == 0:
        raise DataError(f"series {series.series_id} has no slices")
    if not np.isfinite(series.pixels).all():
        raise DataError(f"series {series.series_id}: pixels hold NaN or infinite values")


def _first_source(series: Series) -> str:
    return series.sources[0] if series.sources else series.series_id
