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
