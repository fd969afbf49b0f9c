import pytest
import torch

from anogan.config import ModelConfig
from anogan.models.fanogan import FAnoGAN, anomaly_from_reconstruction, luminance_dissimilarity


@pytest.fixture
def model():
    torch.manual_seed(0)
    return FAnoGAN(ModelConfig(latent_dim=16, channels=(8, 16, 32, 64)), 32).eval()


def test_shapes_and_ranges(model):
    images = torch.rand(3, 1, 32, 32) * 2 - 1
    output = model.anomaly(images)
    assert output.reconstruction.shape == images.shape
    assert output.reconstruction.abs().max() <= 1.0
    assert output.score.shape == (3,)
    assert model.encoder(images).abs().max() <= 3.0


def test_perfect_reconstruction_scores_zero_and_corruption_scores_higher(model):
    images = torch.rand(4, 1, 32, 32) * 2 - 1
    perfect = anomaly_from_reconstruction(images, images.clone(), model.critic.features)
    assert torch.equal(perfect.score, torch.zeros(4))
    assert perfect.pixel_map.abs().max() == 0

    corrupted = images.clone()
    corrupted[:, :, 8:16, 8:16] = 1.0
    output = anomaly_from_reconstruction(images, corrupted, model.critic.features)
    assert (output.score > 0).all()
    outside = output.pixel_map.clone()
    outside[:, :, 8:16, 8:16] = 0
    assert outside.abs().max() == 0


def test_score_is_image_residual_plus_kappa_feature_residual(model):
    images = torch.rand(2, 1, 32, 32) * 2 - 1
    output = model.anomaly(images, kappa=2.5)
    expected_image = (images - output.reconstruction).square().mean(dim=(1, 2, 3))
    assert torch.allclose(output.image_residual, expected_image)
    assert torch.allclose(output.score, expected_image + 2.5 * output.feature_residual)


def test_luminance_term_is_zero_when_equal_bounded_and_blind_to_a_common_scale():
    torch.manual_seed(2)
    images = torch.rand(3, 1, 24, 24) * 2 - 1
    assert luminance_dissimilarity(images, images.clone()).max() == 0
    term = luminance_dissimilarity(images, torch.rand_like(images) * 2 - 1)
    assert term.shape == images.shape and term.min() >= 0 and term.max() <= 2

    # Two flat regions, drawn off by 0.1 and 0.3: away from their border the term is the
    # same when both images are scaled by one half (a flatter slice), up to C1.
    regions = torch.full((1, 1, 24, 24), 0.5)
    regions[..., 12:] = -0.4
    drawn = regions + torch.where(regions > 0, 0.1, -0.3)
    away = (..., slice(None), [*range(0, 6), *range(18, 24)])
    sharp = luminance_dissimilarity(regions, drawn)[away]
    flat = luminance_dissimilarity(0.5 * regions, 0.5 * drawn)[away]
    assert sharp.min() > 0.01
    torch.testing.assert_close(flat, sharp, rtol=0.01, atol=0)


def test_luminance_term_counts_a_region_drawn_on_the_wrong_side_of_the_mean():
    images = torch.full((2, 1, 32, 32), 0.2)  # a uniform region above the slice's mean
    same_side = torch.full_like(images, 0.1)  # drawn dimmer: squared 0.01, luminance 0.2
    wrong_side = torch.full_like(images, -0.1)  # drawn below the mean: squared 0.09, luminance 1.8
    low = luminance_dissimilarity(images, same_side)
    high = luminance_dissimilarity(images, wrong_side)
    assert low.mean().item() == pytest.approx(0.01 / 0.05, rel=0.01)
    assert high.mean().item() == pytest.approx(0.09 / 0.05, rel=0.01)


def test_the_luminance_residual_is_the_image_term_of_the_score(model):
    images = torch.rand(2, 1, 32, 32) * 2 - 1
    mask = torch.zeros_like(images)
    mask[:, :, 4:28, 6:26] = 1
    output = model.anomaly(images, kappa=0.5, mask=mask, residual="luminance")
    term = luminance_dissimilarity(images, output.reconstruction)
    expected = (term * mask).sum(dim=(1, 2, 3)) / mask.sum(dim=(1, 2, 3))
    torch.testing.assert_close(output.image_residual, expected)
    torch.testing.assert_close(output.score, expected + 0.5 * output.feature_residual)
    # the map is still |x - x_hat| inside the foreground
    torch.testing.assert_close(output.pixel_map, (images - output.reconstruction).abs() * mask)


def test_mask_restricts_residual_to_foreground(model):
    images = torch.rand(2, 1, 32, 32) * 2 - 1
    reconstruction = images.clone()
    reconstruction[:, :, :, :16] = -1.0  # errors only in the left half
    mask = torch.zeros_like(images)
    mask[:, :, :, 16:] = 1.0
    output = anomaly_from_reconstruction(images, reconstruction, model.critic.features, 0.0, mask)
    assert torch.equal(output.image_residual, torch.zeros(2))
    assert output.pixel_map.sum() == 0


def test_refinement_finds_what_the_generator_can_draw_without_touching_the_weights(model):
    # Windows the generator itself drew: a latent that reconstructs them exists, and the
    # (untrained) encoder's first guess is far from it.
    torch.manual_seed(1)
    with torch.no_grad():
        images = model.generator(torch.randn(4, 16))
    mask = torch.ones_like(images)
    plain = model.anomaly(images, 1.0, mask)
    latent = model.encoder(images).detach()
    with torch.inference_mode():  # as the scorer calls it
        refined_latent = model.refine_latent(images, latent, 1.0, mask, 30, 0.1)
        refined = model.anomaly(images, 1.0, mask, refine_steps=30, refine_step_size=0.1)

    with torch.no_grad():
        start = anomaly_from_reconstruction(images, model.generator(latent), model.critic.features)
        best = anomaly_from_reconstruction(
            images, model.generator(refined_latent), model.critic.features
        )
    assert (best.score <= start.score * (1 + 1e-5)).all()  # the best latent visited is kept
    assert best.score.mean() < 0.5 * start.score.mean()
    assert refined_latent.abs().max() <= model.encoder.latent_bound
    assert all(parameter.grad is None for parameter in model.parameters())

    # The map and the reconstruction come from the refined latent, the scores from E(x).
    torch.testing.assert_close(refined.score, plain.score)
    torch.testing.assert_close(refined.reconstruction, model.generator(refined_latent).detach())
    assert refined.pixel_map.mean() < 0.7 * plain.pixel_map.mean()


def test_refinement_of_a_window_does_not_depend_on_its_batch(model):
    images = torch.rand(5, 1, 32, 32) * 2 - 1
    latent = model.encoder(images).detach()
    batch = model.refine_latent(images, latent, 1.0, None, 5, 0.1)
    alone = model.refine_latent(images[2:3], latent[2:3], 1.0, None, 5, 0.1)
    torch.testing.assert_close(alone, batch[2:3], rtol=1e-4, atol=1e-5)


def test_refinement_of_a_model_placed_under_inference_mode_says_so():
    with torch.inference_mode():
        model = FAnoGAN(ModelConfig(latent_dim=16, channels=(8, 16, 32, 64)), 32).eval()
        images = torch.rand(2, 1, 32, 32) * 2 - 1
        with pytest.raises(RuntimeError, match="outside inference mode"):
            model.anomaly(images, refine_steps=2)
