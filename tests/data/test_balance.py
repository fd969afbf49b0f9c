"""Balanced sampling: copies share one slice's weight, rare slices are drawn more often."""

import numpy as np
import pytest
import torch

from anogan.config import load_config
from anogan.data.balance import density_weights, sampling_weights
from anogan.data.patches import PatchSampler
from anogan.errors import ConfigError


def _blobs(count: int, seed: int) -> torch.Tensor:
    """(count, 1, 32, 32) in [-1, 1]: one bright disc each, at a random place and size."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.arange(32).view(32, 1).float()
    columns = torch.arange(32).view(1, 32).float()
    images = []
    for _ in range(count):
        row, column = (torch.rand(2, generator=generator) * 20 + 6).tolist()
        radius = float(torch.rand(1, generator=generator) * 6 + 3)
        disc = ((rows - row) ** 2 + (columns - column) ** 2 <= radius**2).float()
        images.append(disc * 2 - 1)
    return torch.stack(images).unsqueeze(1)


def test_a_group_of_copies_is_drawn_about_as_often_as_one_slice() -> None:
    distinct = _blobs(40, seed=0)
    copies = distinct[:1].repeat(20, 1, 1, 1) + 0.001 * torch.randn(20, 1, 32, 32)
    images = torch.cat([distinct[1:], copies])  # 39 distinct slices, then 20 copies of one

    weights = density_weights(images)

    assert weights.shape == (59,) and np.isclose(weights.sum(), 1.0) and (weights > 0).all()
    copies_share = weights[39:].sum()
    assert copies_share < 3 * weights[:39].mean()  # uniform draws would give them 20 shares
    assert weights[39:].max() < weights[:39].min()


def test_a_rare_kind_gains_weight_over_a_common_kind() -> None:
    common = _blobs(60, seed=1)
    rare = -_blobs(4, seed=2)  # dark discs on a bright ground: far from every common slice
    images = torch.cat([common, rare])

    weights = density_weights(images)

    assert weights[60:].sum() > 2 * 4 / 64  # more than twice their uniform share


def test_few_slices_and_uniform_sampling_give_uniform_draws() -> None:
    images = _blobs(5, seed=3)

    assert np.allclose(density_weights(images), 0.2)
    assert sampling_weights(images, "uniform") is None
    assert sampling_weights(images, "balanced") is not None


def test_the_sampler_draws_slices_by_their_weights() -> None:
    images = torch.arange(4).float().view(4, 1, 1, 1).expand(4, 1, 8, 8).contiguous()
    weights = np.array([0.7, 0.1, 0.1, 0.1])
    sampler = PatchSampler(images, torch.ones_like(images), 8, seed=0, weights=weights)

    drawn = torch.cat([sampler.sample(500)[:, 0, 0, 0] for _ in range(8)])

    share = (drawn == 0).float().mean().item()
    assert 0.66 < share < 0.74  # 4000 draws: the standard error of the share is 0.007


def test_the_sampler_rejects_weights_of_the_wrong_length() -> None:
    images = torch.zeros(4, 1, 8, 8)

    with pytest.raises(ValueError, match="4 probabilities"):
        PatchSampler(images, torch.ones_like(images), 8, seed=0, weights=np.full(3, 1 / 3))


def test_an_unknown_sampling_mode_is_a_config_error(tmp_path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("data:\n  sampling: rare-first\n")

    with pytest.raises(ConfigError, match="sampling"):
        load_config(path, [])
