from dataclasses import replace

import pytest
import torch

from anogan.config import ModelConfig, ScoringConfig
from anogan.errors import ConfigError
from anogan.models.fanogan import FAnoGAN
from anogan.scoring.reference import HealthyReference, ReferenceLookup
from anogan.scoring.scorer import build_reference, score_slices
from anogan.training.checkpoint import load_model, save_model


def _model_and_slices(
    count: int = 12, size: int = 32
) -> tuple[FAnoGAN, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = FAnoGAN(ModelConfig(latent_dim=16, channels=(8, 16, 32, 64)), size)
    images = torch.rand(count, 1, size, size) * 2 - 1
    masks = torch.zeros_like(images)
    masks[:, :, 4:28, 3:30] = 1
    return model.eval(), images, masks


def test_the_lookup_is_the_mean_score_of_the_k_nearest_latents():
    # Latents on a line at 0, 1, ..., 9; scores 10 * position + mirrored offset.
    positions = torch.arange(10, dtype=torch.float32)
    reference = HealthyReference(
        latents=torch.stack([positions, torch.zeros(10)], dim=1),
        image_residual=torch.stack([positions * 10, positions * 10 + 2], dim=1).double(),
        feature_residual=torch.stack([torch.ones(10), torch.full((10,), 3.0)], dim=1).double(),
        masked=True,
        mask_erosion=0,
    )
    queries = torch.tensor([[0.1, 0.0], [6.8, 0.0]])  # nearest 3: {0, 1, 2} and {6, 7, 8}
    plain = ReferenceLookup(reference, ScoringConfig(reference_k=3, kappa=2.0))
    # as given: 10 * p + 2 * 1
    assert plain(queries).tolist() == pytest.approx([10 + 2, 70 + 2])
    mirrored = ReferenceLookup(reference, ScoringConfig(reference_k=3, kappa=2.0, flip=True))
    # mean of 10 p + 2 * 1 and 10 p + 2 + 2 * 3: 10 p + 5
    assert mirrored(queries).tolist() == pytest.approx([10 + 5, 70 + 5])


def test_scores_are_the_plain_scores_less_the_independently_computed_reference():
    model, images, masks = _model_and_slices()
    bank, queries = images[:8], images[8:]
    config = ScoringConfig(batch_size=4, flip=True, mask_erosion=1)
    model.reference = build_reference(model, bank, masks[:8], config)
    assert len(model.reference) == 8  # one 32 px window a 32 px slice

    plain = score_slices(model, queries, masks[8:], config)
    bank_scores = score_slices(model, bank, masks[:8], config).score.double()
    with torch.no_grad():
        distances = torch.cdist(model.encoder(queries), model.encoder(bank))  # (4, 8)
    expected = bank_scores[distances.topk(3, largest=False).indices].mean(dim=1)

    corrected = score_slices(model, queries, masks[8:], replace(config, reference_k=3))
    assert corrected.reference.double() == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert corrected.score.double() == pytest.approx(
        plain.score.double() - expected, rel=1e-4, abs=1e-6
    )
    assert torch.equal(corrected.pixel_maps, plain.pixel_maps)  # the maps are not touched


def test_a_training_window_against_itself_alone_scores_zero():
    model, images, masks = _model_and_slices(count=6)
    config = ScoringConfig(batch_size=4, reference_k=1)
    model.reference = build_reference(model, images, masks, config)
    scores = score_slices(model, images, masks, config)
    assert scores.score.abs().max() < 1e-4 * scores.reference.abs().max()


def test_the_reference_keeps_a_seeded_subsample_of_windows():
    model, _, _ = _model_and_slices(count=3, size=32)
    large = torch.rand(3, 1, 64, 64) * 2 - 1  # 9 windows a slice at overlap 0.5
    config = ScoringConfig(batch_size=8)
    full = build_reference(model, large, torch.ones_like(large), config)
    first = build_reference(model, large, torch.ones_like(large), config, seed=3, limit=10)
    again = build_reference(model, large, torch.ones_like(large), config, seed=3, limit=10)
    assert len(full) == 27 and len(first) == 10
    assert torch.equal(first.latents, again.latents)
    # each kept window is one of the full set's (up to the last bits, which move with the
    # batch a window is encoded in), and no two are the same
    distances = torch.cdist(first.latents, full.latents)  # (10, 27)
    nearest = distances.min(dim=1)
    assert nearest.values.max() < 1e-2 < distances.topk(2, largest=False).values[:, 1].min()
    assert len(set(nearest.indices.tolist())) == 10


@pytest.mark.parametrize("residual", ["squared", "luminance"])
def test_a_reloaded_model_keeps_its_reference_and_scores_identically(
    tiny_config, tmp_path, residual
):
    _, images, masks = _model_and_slices(count=8, size=tiny_config.data.patch_size)
    model = FAnoGAN(tiny_config.model, tiny_config.data.patch_size).eval()
    config = ScoringConfig(batch_size=4, reference_k=2, residual=residual)
    model.reference = build_reference(model, images[:6], masks[:6], config)
    before = score_slices(model, images[6:], masks[6:], config).score
    save_model(model, tiny_config, {"threshold": 0.0}, {}, tmp_path / "model.pt")
    loaded = load_model(tmp_path / "model.pt")
    assert loaded.model.reference.residual == residual
    assert torch.equal(loaded.model.reference.latents, model.reference.latents)
    assert torch.equal(score_slices(loaded.model, images[6:], masks[6:], config).score, before)


def test_reference_settings_that_cannot_hold_are_config_errors():
    model, images, masks = _model_and_slices(count=4)
    with pytest.raises(ConfigError, match="no healthy reference"):
        score_slices(model, images, masks, ScoringConfig(reference_k=2))
    model.reference = build_reference(model, images, masks, ScoringConfig(mask_erosion=1))
    with pytest.raises(ConfigError, match="holds 4 training windows"):
        score_slices(model, images, masks, ScoringConfig(reference_k=5, mask_erosion=1))
    with pytest.raises(ConfigError, match="True / 1 / squared, got True / 0 / squared"):
        score_slices(model, images, masks, ScoringConfig(reference_k=2, mask_erosion=0))
    with pytest.raises(ConfigError, match="got True / 1 / luminance"):
        asked = ScoringConfig(reference_k=2, mask_erosion=1, residual="luminance")
        score_slices(model, images, masks, asked)
    with pytest.raises(ConfigError, match=r"0 \(off\) or more"):
        score_slices(model, images, masks, ScoringConfig(reference_k=-1))
