import numpy as np
import pytest
import torch

from anogan.config import ModelConfig, ScoringConfig
from anogan.models.fanogan import FAnoGAN
from anogan.scoring.calibrate import Calibration, calibrate
from anogan.scoring.scorer import score_slices, window_slices


def test_windows_cover_every_pixel():
    for height, width in ((32, 32), (48, 40), (100, 64)):
        covered = np.zeros((height, width), bool)
        for rows, columns in window_slices(height, width, 32, 0.5):
            assert rows.stop - rows.start == 32 and columns.stop - columns.start == 32
            covered[rows, columns] = True
        assert covered.all()


def test_maps_are_on_the_slice_grid_and_zero_outside_the_foreground():
    torch.manual_seed(0)
    model = FAnoGAN(ModelConfig(latent_dim=16, channels=(8, 16, 32, 64)), 32)
    images = torch.rand(3, 1, 64, 48) * 2 - 1
    masks = torch.zeros_like(images)
    masks[:, :, 10:50, 8:40] = 1
    result = score_slices(model, images, masks, ScoringConfig(batch_size=4))
    assert result.pixel_maps.shape == images.shape
    assert result.pixel_maps[masks == 0].abs().max() == 0
    assert result.score.shape == (3,)
    assert torch.isfinite(result.score).all()


@pytest.mark.parametrize("aggregation", ["max", "mean", "topk"])
def test_aggregation_orders_as_expected(aggregation):
    torch.manual_seed(0)
    model = FAnoGAN(ModelConfig(latent_dim=16, channels=(8, 16, 32, 64)), 32)
    images = torch.rand(1, 1, 64, 64) * 2 - 1
    masks = torch.ones_like(images)
    scores = {
        name: score_slices(model, images, masks, ScoringConfig(aggregation=name)).score.item()
        for name in ("max", "mean", "topk")
    }
    assert scores["mean"] <= scores["topk"] <= scores["max"]
    assert aggregation in scores


def test_threshold_gives_the_target_false_positive_rate():
    scores = torch.arange(200, dtype=torch.float64)
    maps = torch.rand(200, 1, 8, 8)
    calibration = calibrate(scores, maps, torch.ones_like(maps), target_fpr=0.05)
    assert calibration.observed_fpr == pytest.approx(0.05, abs=0.01)
    assert 0 < calibration.heatmap_max <= 1
    assert Calibration.from_dict(calibration.to_dict()) == calibration


def test_calibration_rejects_an_impossible_rate():
    with pytest.raises(ValueError, match="target_fpr"):
        calibrate(torch.ones(5), torch.ones(5, 1, 2, 2), torch.ones(5, 1, 2, 2), 0.0)


def test_channels_last_scoring_matches_and_stays_fp32_even_when_bf16_is_asked():
    from anogan.config import ComputeConfig

    torch.manual_seed(0)
    model = FAnoGAN(ModelConfig(latent_dim=16, channels=(8, 16, 32, 64)), 32)
    images = torch.rand(3, 1, 64, 48) * 2 - 1
    masks = torch.ones_like(images)
    plain = score_slices(model, images, masks, ScoringConfig(batch_size=4))
    compute = ComputeConfig(device="cpu", precision="bf16", channels_last=True)
    fast = score_slices(model, images, masks, ScoringConfig(batch_size=4), compute)
    assert torch.allclose(fast.score, plain.score, rtol=1e-4)
    assert torch.allclose(fast.pixel_maps, plain.pixel_maps, atol=1e-5)


def test_smoothed_maps_keep_mass_edges_and_zero_outside():
    from anogan.scoring.scorer import smooth_map

    spike = torch.zeros(1, 20, 20)
    spike[0, 10, 10] = 1.0
    smoothed = smooth_map(spike, torch.ones(1, 20, 20), 1.5)
    assert smoothed.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert smoothed.max() == smoothed[0, 10, 10] and smoothed.max() < 0.2

    mask = torch.zeros(1, 20, 20)
    mask[:, 5:15, 5:15] = 1.0
    flat = smooth_map(mask.clone(), mask, 2.0)  # a constant map inside the mask stays so
    assert torch.allclose(flat[mask > 0], torch.ones(100), atol=1e-5)
    assert flat[mask == 0].abs().max() == 0


def test_flip_averaging_makes_scores_mirror_invariant_and_maps_mirror_images():
    torch.manual_seed(0)
    model = FAnoGAN(ModelConfig(latent_dim=16, channels=(8, 16, 32, 64)), 32)
    images = torch.rand(2, 1, 32, 48) * 2 - 1  # two windows a slice, overlapping by half
    masks = torch.ones_like(images)
    masks[:, :, :, :6] = 0
    both = torch.cat([images, images.flip(-1)]), torch.cat([masks, masks.flip(-1)])
    plain = score_slices(model, *both, ScoringConfig(batch_size=4))
    flipped = score_slices(model, *both, ScoringConfig(batch_size=4, flip=True))

    assert not torch.allclose(plain.score[:2], plain.score[2:], rtol=1e-3)  # the test can fail
    torch.testing.assert_close(flipped.score[:2], flipped.score[2:], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(flipped.pixel_maps[:2], flipped.pixel_maps[2:].flip(-1))
    torch.testing.assert_close(flipped.reconstructions[:2], flipped.reconstructions[2:].flip(-1))
    # The mean of the plain slice's score and its mirror's is what flip gives each of them.
    torch.testing.assert_close(
        flipped.score[:2], (plain.score[:2] + plain.score[2:]) / 2, rtol=1e-5, atol=1e-7
    )


@pytest.mark.slow
def test_compiled_scoring_gives_the_eager_scores():
    # Slow: inductor builds C++ kernels for each network.
    from anogan.config import ComputeConfig

    torch.manual_seed(0)
    model = FAnoGAN(ModelConfig(latent_dim=16, channels=(8, 16, 32, 64)), 32)
    images = torch.rand(40, 1, 48, 48) * 2 - 1
    masks = torch.ones_like(images)
    config = ScoringConfig(batch_size=16)
    eager = score_slices(model, images, masks, config, ComputeConfig(device="cpu"))
    compiled = score_slices(model, images, masks, config, ComputeConfig(device="cpu", compile=True))
    assert torch.allclose(compiled.score, eager.score, rtol=1e-5, atol=0)
    assert torch.allclose(compiled.pixel_maps, eager.pixel_maps, atol=1e-5)


def test_refined_scoring_sharpens_the_maps_and_keeps_the_scores():
    torch.manual_seed(0)
    model = FAnoGAN(ModelConfig(latent_dim=16, channels=(8, 16, 32, 64)), 32)
    images = torch.rand(3, 1, 32, 48) * 2 - 1
    masks = torch.ones_like(images)
    plain = score_slices(model, images, masks, ScoringConfig(batch_size=4))
    refined = score_slices(model, images, masks, ScoringConfig(batch_size=4, refine_steps=10))

    torch.testing.assert_close(refined.score, plain.score)
    residual = (images - refined.reconstructions).square().mean(dim=(1, 2, 3))
    before = (images - plain.reconstructions).square().mean(dim=(1, 2, 3))
    assert (residual < before).all()  # the test can fail
    assert not torch.equal(refined.pixel_maps, plain.pixel_maps)


def test_eroded_masks_shrink_by_the_given_pixels_and_never_vanish():
    from anogan.scoring.scorer import erode_mask

    mask = torch.zeros(1, 20, 20)
    mask[:, 4:14, 5:15] = 1.0
    eroded = erode_mask(mask, 2)
    expected = torch.zeros(1, 20, 20)
    expected[:, 6:12, 7:13] = 1.0
    assert torch.equal(eroded, expected)
    assert torch.equal(erode_mask(torch.ones(1, 8, 8), 1), torch.ones(1, 8, 8))  # slice edge
    line = torch.zeros(1, 9, 9)
    line[:, 4, :] = 1.0
    assert torch.equal(erode_mask(line, 1), line)  # nothing would be left: kept as it was


def test_mask_erosion_takes_residuals_inside_the_shrunk_foreground_only():
    torch.manual_seed(0)
    model = FAnoGAN(ModelConfig(latent_dim=16, channels=(8, 16, 32, 64)), 32)
    images = torch.rand(2, 1, 32, 32) * 2 - 1
    masks = torch.zeros_like(images)
    masks[:, :, 4:28, 4:28] = 1
    inner = torch.zeros_like(images)
    inner[:, :, 5:27, 5:27] = 1  # without the outermost pixel of the foreground

    plain = score_slices(model, images, masks, ScoringConfig(batch_size=4))
    eroded = score_slices(model, images, masks, ScoringConfig(batch_size=4, mask_erosion=1))
    given = score_slices(model, images, inner, ScoringConfig(batch_size=4))

    assert not torch.allclose(plain.score, eroded.score)  # the test can fail
    torch.testing.assert_close(eroded.score, given.score)
    torch.testing.assert_close(eroded.pixel_maps, given.pixel_maps)
    assert eroded.pixel_maps[(masks - inner) > 0].abs().max() == 0


def test_a_negative_mask_erosion_is_a_config_error():
    from anogan.errors import ConfigError

    model = FAnoGAN(ModelConfig(latent_dim=16, channels=(8, 16, 32, 64)), 32)
    images = torch.zeros(1, 1, 32, 32)
    with pytest.raises(ConfigError, match="mask_erosion"):
        score_slices(model, images, torch.ones_like(images), ScoringConfig(mask_erosion=-1))
