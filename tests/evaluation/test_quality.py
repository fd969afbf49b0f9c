"""Quality figures: AUC, bootstrap intervals, baselines, localisation, near-duplicate groups."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from anogan.config import DataConfig
from anogan.data.dataset import load_lesioned_slices, load_slices
from anogan.data.groups import grouped_holdout, near_duplicate_groups
from anogan.data.lesions import LESION_KINDS
from anogan.data.sources import DataItem
from anogan.evaluation.metrics import equal_contrast_auc
from anogan.evaluation.quality import (
    OVERALL,
    baseline_figures,
    evaluate_detector,
    image_figures,
    localisation_figures,
    quality_tables,
    roc_auc,
)


def test_roc_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=200).astype(float)  # many ties
    labels = rng.integers(0, 2, size=200)
    assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert np.isnan(roc_auc(scores, np.zeros(200, int)))


def _two_class(seed=0, shift=2.0):
    rng = np.random.default_rng(seed)
    healthy = rng.normal(0, 1, 100)
    glioma, pituitary = rng.normal(shift, 1, 60), rng.normal(0.2, 1, 40)
    scores = np.concatenate([healthy, glioma, pituitary])
    labels = np.concatenate([np.zeros(100), np.ones(100)]).astype(int)
    subtypes = ["healthy"] * 100 + ["glioma"] * 60 + ["pituitary"] * 40
    return scores, labels, subtypes


def test_image_figures_per_subtype_with_intervals_around_the_point():
    scores, labels, subtypes = _two_class()
    threshold = float(np.quantile(scores[:100], 0.95))
    figures = image_figures("m", scores, labels, subtypes, threshold, repeats=300, seed=1)

    assert set(figures.roc_auc) == {OVERALL, "glioma", "pituitary"}
    for subtype, truth_index in (("glioma", slice(100, 160)), ("pituitary", slice(160, 200))):
        keep = np.r_[0:100, np.arange(200)[truth_index]]
        expected = roc_auc_score(labels[keep], scores[keep])
        assert figures.roc_auc[subtype].value == pytest.approx(expected)
    assert figures.roc_auc[OVERALL].value == pytest.approx(roc_auc_score(labels, scores))
    assert figures.roc_auc["glioma"].value > figures.roc_auc["pituitary"].value + 0.3
    for estimate in (*figures.roc_auc.values(), *figures.average_precision.values()):
        assert estimate.low <= estimate.value <= estimate.high
        assert estimate.high - estimate.low > 0.01  # a real interval, not a point
    assert figures.sensitivity["glioma"].value == pytest.approx(
        np.mean(scores[100:160] > threshold)
    )
    assert figures.false_positive_rate.value == pytest.approx(np.mean(scores[:100] > threshold))
    # Seeded: the same call gives the same intervals; another seed other ones.
    again = image_figures("m", scores, labels, subtypes, threshold, repeats=300, seed=1)
    other = image_figures("m", scores, labels, subtypes, threshold, repeats=300, seed=2)
    assert again.roc_auc[OVERALL] == figures.roc_auc[OVERALL]
    assert other.roc_auc[OVERALL].low != figures.roc_auc[OVERALL].low


def test_intervals_narrow_with_more_data():
    small = image_figures("m", *_two_class(0, 1.0)[:2], ["x"] * 200, None, repeats=300)
    rng = np.random.default_rng(3)
    scores = np.concatenate([rng.normal(0, 1, 1000), rng.normal(1.0, 1, 1000)])
    labels = np.r_[np.zeros(1000), np.ones(1000)].astype(int)
    large = image_figures("m", scores, labels, ["x"] * 2000, None, repeats=300)
    width = lambda f: f.roc_auc[OVERALL].high - f.roc_auc[OVERALL].low  # noqa: E731
    assert width(large) < 0.6 * width(small)
    assert large.sensitivity == {} and large.false_positive_rate is None


def test_baselines_take_their_better_direction():
    from anogan.data.dataset import SliceSet

    labels = torch.tensor([0] * 20 + [1] * 20)
    rng = np.random.default_rng(0)
    std = np.r_[rng.normal(2, 0.1, 20), rng.normal(1, 0.1, 20)]  # lower std = anomalous
    slices = SliceSet(
        images=torch.zeros(40, 1, 4, 4),
        masks=torch.ones(40, 1, 4, 4),
        labels=labels,
        subtypes=["healthy"] * 20 + ["t"] * 20,
        sources=[str(i) for i in range(40)],
        raw_statistics={"std": std, "mean": rng.normal(0, 1, 40), "p99": std * 3},
        lesion_masks=None,
        has_lesion_mask=torch.zeros(40, dtype=torch.bool),
        item_index=np.arange(40),
    )
    figures = {item.name.split(" (")[0]: item for item in baseline_figures(slices, repeats=50)}
    assert figures["pixel std"].roc_auc[OVERALL].value == 1.0
    assert "lower = anomalous" in baseline_figures(slices, 10)[0].name
    assert figures["pixel std"].contrast_spearman == pytest.approx(-1.0)
    table = quality_tables(list(figures.values()))
    assert table.count("\n") == 5 and "pixel p99" in table


def test_near_duplicates_group_and_holdout_never_splits_a_group():
    rng = np.random.default_rng(0)
    bases = torch.from_numpy(rng.uniform(-1, 1, (30, 1, 32, 32))).float()
    copies = bases[::3] + 0.05 * torch.randn(10, 1, 32, 32)  # twins of every third base
    images = torch.cat([bases, copies])
    groups = near_duplicate_groups(images)
    assert groups.max() + 1 == 30
    for index in range(10):
        assert groups[30 + index] == groups[3 * index]
    held = grouped_holdout(groups, 0.2, seed=0)
    for group in np.unique(groups):
        assert len(set(held[groups == group])) == 1
    assert 0.1 <= held.mean() <= 0.3

    # Slices of one input are linked even when they differ.
    items = np.repeat(np.arange(20), 2)
    linked = near_duplicate_groups(images, items)
    assert all(linked[2 * i] == linked[2 * i + 1] for i in range(20))


def _healthy_items(tmp_path, count=3):
    from PIL import Image

    rng = np.random.default_rng(0)
    rows, columns = np.mgrid[0:64, 0:64]
    items = []
    for index in range(count):
        disc = ((rows - 32) ** 2 + (columns - 32) ** 2 < 26**2).astype(float)
        image = disc * (0.5 + 0.1 * rng.standard_normal((64, 64)))
        path = tmp_path / f"h{index}.png"
        Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).save(path)
        items.append(DataItem(path, 0, "validation", "image", "healthy"))
    return items


def test_lesioned_slices_carry_masks_inside_the_foreground(tmp_path):
    items = _healthy_items(tmp_path)
    config = DataConfig(image_size=32, patch_size=32)
    lesioned = load_lesioned_slices(items, config, LESION_KINDS, (0.05, 0.1), seed=0)
    plain = load_slices(items, config, "plain")

    assert len(lesioned) == 3 * len(LESION_KINDS) * 2
    assert lesioned.labels.tolist() == [1] * len(lesioned)
    assert sorted(set(lesioned.subtypes)) == sorted(
        f"{kind}-{radius:g}" for kind in LESION_KINDS for radius in (0.05, 0.1)
    )
    areas = lesioned.lesion_masks.sum(dim=(1, 2, 3))
    assert (areas > 0).all()
    assert (lesioned.lesion_masks <= lesioned.masks).all()
    small = [i for i, s in enumerate(lesioned.subtypes) if s.endswith("0.05")]
    large = [i for i, s in enumerate(lesioned.subtypes) if s.endswith("0.1")]
    assert areas[large].mean() > 2.5 * areas[small].mean()
    # The image changed inside the lesion far more than outside it.
    first = lesioned.subtypes.index("bright-0.1")
    change = (lesioned.images[first] - plain.images[lesioned.item_index[first]]).abs()
    inside = lesioned.lesion_masks[first] > 0
    assert change[inside].mean() > 5 * change[~inside].mean()
    # Seeded.
    again = load_lesioned_slices(items, config, LESION_KINDS, (0.05, 0.1), seed=0)
    assert torch.equal(again.images, lesioned.images)


class _Oracle:
    """A detector whose map is the lesion itself (plus noise): figures near perfect."""

    name = "oracle"
    threshold = None

    def __init__(self, lesioned, noise):
        self.lesioned, self.noise = lesioned, noise

    def score(self, images, masks):
        maps = self.lesioned.lesion_masks + self.noise * torch.rand_like(masks)
        return maps.flatten(1).amax(1).double().numpy(), maps * masks


def test_localisation_figures_rank_an_oracle_above_noise(tmp_path):
    items = _healthy_items(tmp_path, 2)
    lesioned = load_lesioned_slices(
        items, DataConfig(image_size=32, patch_size=32), ("bright",), (0.1,), seed=0
    )
    sharp = localisation_figures(_Oracle(lesioned, 0.1), lesioned)
    blurred = localisation_figures(_Oracle(lesioned, 3.0), lesioned)
    assert set(sharp) == {OVERALL, "bright-0.1"}
    assert sharp[OVERALL]["pixel_roc_auc"] == 1.0 and sharp[OVERALL]["pixel_best_dice"] > 0.95
    assert blurred[OVERALL]["pixel_roc_auc"] < 0.9


def test_unnamed_subtypes_are_resampled_too():
    scores, labels, _ = _two_class(seed=4, shift=1.0)
    figures = image_figures("m", scores, labels, [""] * 200, None, repeats=200)
    assert set(figures.roc_auc) == {OVERALL}
    interval = figures.roc_auc[OVERALL]
    assert interval.high - interval.low > 0.05
    mixed = ["healthy"] * 100 + ["glioma"] * 60 + [""] * 40
    figures = image_figures("m", scores, labels, mixed, None, repeats=200)
    assert set(figures.roc_auc) == {OVERALL, "glioma"}
    assert figures.roc_auc[OVERALL].value == pytest.approx(roc_auc_score(labels, scores))


def test_a_contrast_proxy_scores_chance_at_equal_contrast():
    rng = np.random.default_rng(5)
    labels = np.r_[np.zeros(300), np.ones(300)].astype(int)
    pixel_std = np.r_[rng.normal(2.0, 0.5, 300), rng.normal(1.2, 0.5, 300)]  # tumours flatter
    proxy = -pixel_std + 0.01 * rng.standard_normal(600)
    real = labels + 0.8 * rng.standard_normal(600)  # knows the label, blind to contrast
    proxy_loss = roc_auc_score(labels, proxy) - equal_contrast_auc(proxy, labels, pixel_std)
    real_loss = roc_auc_score(labels, real) - equal_contrast_auc(real, labels, pixel_std)
    assert roc_auc_score(labels, proxy) > 0.8 and proxy_loss > 0.15
    assert abs(real_loss) < 0.05
    assert np.isnan(equal_contrast_auc(real, np.zeros(600, int), pixel_std))


class _OwnSliceDetector:
    """Scores each slice 10 x its item's position; a lesioned copy scores its own slice's
    score plus `shift`, so only a correct pairing of copies with slices sees the shift."""

    name = "own"
    threshold = None

    def __init__(self, slices, lesioned, shift):
        self.slices, self.lesioned, self.shift = slices, lesioned, shift

    def score(self, images, masks):
        copies = images is self.lesioned.images
        chosen = self.lesioned if copies else self.slices
        scores = 10.0 * chosen.item_index + (self.shift if copies else 0.0)
        return scores.astype(float), torch.zeros_like(masks)


def test_lesioned_copies_are_judged_against_their_own_slice(tmp_path):
    from PIL import Image

    items = _healthy_items(tmp_path, 3)
    tumour = tmp_path / "t.png"
    Image.fromarray(np.full((64, 64), 90, np.uint8)).save(tumour)
    items.append(DataItem(tumour, 1, "validation", "image", "glioma"))
    config = DataConfig(image_size=32, patch_size=32)
    slices = load_slices(items, config, "slices")
    lesioned = load_lesioned_slices(items[:3], config, ("bright", "dark"), (0.1,), seed=0)

    above = evaluate_detector(_OwnSliceDetector(slices, lesioned, 1.0), slices, lesioned, 20)
    below = evaluate_detector(_OwnSliceDetector(slices, lesioned, -1.0), slices, lesioned, 20)
    same = evaluate_detector(_OwnSliceDetector(slices, lesioned, 0.0), slices, lesioned, 20)
    assert above.lesion_detection["lesion_above_own"] == 1.0
    assert below.lesion_detection["lesion_above_own"] == 0.0
    assert same.lesion_detection["lesion_above_own"] == 0.5  # ties count one half
    # Against all healthy slices the copies of the first slice score below the others.
    assert 0.5 < above.lesion_detection["lesion_roc_auc"] < 1.0
    assert "/ 1.00 |" in quality_tables([above])
