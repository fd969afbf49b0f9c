import csv

import numpy as np
import torch

from anogan.config import DataConfig
from anogan.data.dataset import load_slices
from anogan.data.patches import PatchSampler
from anogan.data.sources import resolve_data


def test_patches_come_from_the_foreground():
    images = -torch.ones(4, 1, 96, 96)
    masks = torch.zeros_like(images)
    masks[:, :, 60:90, 10:40] = 1
    images[masks > 0] = 0.5
    sampler = PatchSampler(images, masks, 32, seed=0)
    windows = sampler.sample(20)
    assert windows.shape == (20, 1, 32, 32)
    assert ((windows > 0).float().mean(dim=(1, 2, 3)) > 0.2).all()


def test_demo_set_layout_and_lesion_masks(tiny_demo):
    with open(tiny_demo / "manifest.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sum(row["role"] == "train" for row in rows) == 40
    lesions = [row for row in rows if row["label"] == "1"]
    assert len(lesions) == 12 and all(row["mask"] for row in lesions)


def test_demo_loads_to_normalised_slices_with_lesions_inside_the_foreground(tiny_demo):
    dataset = resolve_data(tiny_demo)
    config = DataConfig(image_size=32, patch_size=32)
    validation = load_slices(dataset.validation, config, "validation")
    assert validation.images.shape[1:] == (1, 32, 32)
    assert validation.images.min() >= -1 and validation.images.max() <= 1
    lesion = validation.labels == 1
    assert validation.lesion_masks is not None
    assert validation.lesion_masks[lesion].sum(dim=(1, 2, 3)).min() > 0
    inside = (validation.lesion_masks[lesion] * validation.masks[lesion]).sum()
    assert inside / validation.lesion_masks[lesion].sum() > 0.9
    assert np.isfinite(validation.raw_statistics["std"]).all()


def test_windows_are_exact_crops_centred_on_foreground_pixels():
    height = width = 80
    images = torch.arange(3 * height * width, dtype=torch.float32).view(3, 1, height, width)
    masks = torch.zeros_like(images)
    masks[:, :, 30:50, 20:45] = 1  # far enough from the edges that no centre is moved
    sampler = PatchSampler(images, masks, 16, seed=3)
    for window in sampler.sample(50):
        first = int(window[0, 0, 0])
        slice_index, rest = divmod(first, height * width)
        top, left = divmod(rest, width)
        assert torch.equal(window[0], images[slice_index, 0, top : top + 16, left : left + 16])
        assert masks[slice_index, 0, top + 8, left + 8] == 1


def test_windows_near_an_edge_stay_inside_the_slice():
    images = torch.rand(2, 1, 40, 40)
    masks = torch.zeros_like(images)
    masks[:, :, :3, :3] = 1  # foreground in a corner: centres must move inwards
    windows = PatchSampler(images, masks, 32, seed=0).sample(10)
    assert windows.shape == (10, 1, 32, 32)
    assert all(
        torch.equal(window, images[0, :, :32, :32]) or torch.equal(window, images[1, :, :32, :32])
        for window in windows
    )
