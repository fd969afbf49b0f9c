"""Streaming series scoring end to end: a phantom volume with a lesion through `anogan score`."""

import csv
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from scipy import ndimage

from anogan.cli import main
from anogan.config import ModelConfig, ScoringConfig
from anogan.models.fanogan import FAnoGAN
from anogan.scoring.scorer import WindowStream, score_slices
from tests.scoring.phantom import lesion_volume, trained_model

LESION_SLICES = (4, 5, 6)
SMOOTHING_PIXELS = 2.0  # Gaussian sigma applied to a map before taking its peak


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return trained_model(tmp_path_factory.getbasetemp() / "phantom-model")


@pytest.fixture(scope="module")
def scored_volume(model_dir, tmp_path_factory):
    """A 12-slice NIfTI phantom with a lesion in slices 4-6, scored by the CLI."""
    root = tmp_path_factory.mktemp("volume")
    volume, masks = lesion_volume(12, LESION_SLICES)
    affine = np.array([[0.8, 0, 0, -20], [0, 0.8, 0, 10], [0, 0, 3.0, 5], [0, 0, 0, 1]])
    # Series pixels are (S, H, W); the NIfTI file holds (W, H, S) voxels.
    nib.save(nib.Nifti1Image(np.transpose(volume, (2, 1, 0)), affine), root / "head.nii.gz")
    out = root / "out"
    code = main(["score", "--nifti", str(root / "head.nii.gz"), "--model", str(model_dir),
                 "--out", str(out)])  # fmt: skip
    return code, out, masks, affine


def test_map_peaks_in_the_lesion_and_only_lesion_slices_are_flagged(scored_volume):
    code, out, masks, input_affine = scored_volume
    assert code == 0
    with open(out / "scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["slice"]) for row in rows] == list(range(12))
    flagged = [int(row["slice"]) for row in rows if row["flagged"] == "1"]
    assert flagged == list(LESION_SLICES)

    image = nib.load(out / "maps" / "head.nii.gz")
    assert image.shape == (64, 64, 12)
    maps = np.asarray(image.dataobj)
    to_input = np.linalg.inv(input_affine) @ image.affine  # map voxel -> input voxel
    for index in LESION_SLICES:
        # The slice index of the map may run reversed after reorientation: follow the affine.
        map_slice = round(float((np.linalg.inv(to_input) @ [0, 0, index, 1])[2]))
        # The peak of the map seen as a reader sees it, a hot region: smoothed over about a
        # lesion radius, so that one noisy pixel elsewhere does not count as the peak.
        smoothed = ndimage.gaussian_filter(maps[:, :, map_slice], SMOOTHING_PIXELS)
        column, row = np.unravel_index(np.argmax(smoothed), maps.shape[:2])
        input_voxel = np.round(to_input @ [column, row, map_slice, 1]).astype(int)
        assert masks[input_voxel[2], input_voxel[1], input_voxel[0]], (index, input_voxel)


def test_stream_matches_the_stacked_scorer():
    torch.manual_seed(0)
    model = FAnoGAN(ModelConfig(latent_dim=16, channels=(8, 16, 32, 64)), 32)
    images = torch.rand(5, 1, 48, 48) * 2 - 1
    masks = torch.zeros_like(images)
    masks[:, :, 4:44, 6:40] = 1
    config = ScoringConfig(batch_size=3)
    stacked = score_slices(model, images, masks, config)
    stream = WindowStream(model, config)
    results = []
    for index in range(5):
        results.extend(stream.add(index, images[index], masks[index]))
        # Only slices with windows still queued wait: never more than a batch of windows.
        assert len(stream._queue) < config.batch_size
    results.extend(stream.flush())
    assert [result.key for result in results] == list(range(5))
    assert torch.allclose(torch.tensor([r.score for r in results]), stacked.score)
    assert torch.equal(torch.stack([r.pixel_map for r in results]), stacked.pixel_maps)


class _CountingSink:
    """Records how many slices wait inside the scorer whenever one comes out."""

    def __init__(self) -> None:
        self.scorer = None
        self.waiting: list[int] = []
        self.closed: list[int] = []

    def open_series(self, key, series) -> None:
        pass

    def write_slice(self, key, series, result) -> None:
        self.waiting.append(len(self.scorer.stream._pending))

    def close_series(self, summary) -> None:
        self.closed.append(summary.shape[0])

    def discard_series(self, key, series, reason) -> None:
        raise AssertionError(reason)

    def failure(self, source, reason) -> None:
        raise AssertionError(reason)


def test_a_long_series_streams_with_a_few_slices_in_memory():
    from anogan.config import DataConfig
    from anogan.io.series import Series
    from anogan.scoring.calibrate import REFERENCE_QUANTILES, Calibration
    from anogan.scoring.series import SeriesScorer

    torch.manual_seed(0)
    model = FAnoGAN(ModelConfig(latent_dim=16, channels=(8, 16, 32, 64)), 32)
    rng = np.random.default_rng(0)
    pixels = rng.random((120, 40, 40)).astype(np.float32) * 100
    series = Series(pixels, (1.0, 1.0), np.eye(4), "long", ("long.nii.gz",) * 120, "nifti")
    calibration = Calibration(1.0, 0.05, 0.05, 1.0, 20, tuple(0.0 for _ in REFERENCE_QUANTILES))
    sink = _CountingSink()
    scorer = SeriesScorer(
        model, DataConfig(image_size=48, patch_size=32), ScoringConfig(batch_size=8), calibration
    )
    sink.scorer = scorer
    summaries = scorer.run([series, series], sink)
    assert sink.closed == [120, 120] and len(summaries) == 2
    assert len(sink.waiting) == 240
    assert max(sink.waiting) <= 8  # at most one batch of windows' slices, never the series
    assert scorer._open == {}
