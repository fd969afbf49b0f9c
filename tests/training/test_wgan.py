import pytest
import torch
from torch import nn

from anogan.compute import Compute
from anogan.config import ComputeConfig
from anogan.data.patches import PatchSampler
from anogan.models.fanogan import FAnoGAN
from anogan.training.checkpoint import load_checkpoint
from anogan.training.monitor import LocalRecorder, sliced_wasserstein
from anogan.training.wgan import WGANTrainer, gradient_penalty


def test_gradient_penalty_matches_analytic_value():
    # A linear critic w.x has gradient w everywhere: the penalty is (||w|| - 1)^2 exactly.
    critic = nn.Sequential(nn.Flatten(), nn.Linear(16, 1, bias=True))
    with torch.no_grad():
        critic[1].weight.copy_(torch.arange(16.0).view(1, 16) / 10.0)
    norm = (torch.arange(16.0) / 10.0).norm()
    real, fake = torch.randn(5, 1, 4, 4), torch.randn(5, 1, 4, 4)
    penalty = gradient_penalty(lambda x: critic(x).squeeze(1), real, fake)
    assert torch.allclose(penalty, (norm - 1.0) ** 2)


def test_gradient_penalty_reaches_critic_parameters():
    critic = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 1))
    penalty = gradient_penalty(
        lambda x: critic(x).squeeze(1), torch.randn(4, 1, 4, 4), torch.randn(4, 1, 4, 4)
    )
    penalty.backward()
    assert critic[0 + 1].weight.grad is not None and critic[1].weight.grad.abs().sum() > 0


def _sampler(seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.rand(24, 1, 32, 32, generator=generator) * 0.5 - 0.25
    images[:, :, 8:24, 8:24] += 0.5  # a bright square: something to learn
    return PatchSampler(images, torch.ones_like(images), 32, seed)


def _trainer(config, run_dir, recorder=None, compute=None):
    torch.manual_seed(0)
    model = FAnoGAN(config.model, config.data.patch_size)
    return WGANTrainer(
        model,
        _sampler(),
        config.wgan,
        run_dir,
        recorder or LocalRecorder(),
        0,
        {"note": "x"},
        compute,
    )


@pytest.mark.parametrize(
    "compute",
    [ComputeConfig(device="cpu"), ComputeConfig("cpu", precision="bf16", channels_last=True)],
    ids=["fp32", "bf16-channels-last"],
)
def test_critic_loss_falls_over_a_few_iterations(tiny_config, tmp_path, compute):
    from dataclasses import replace

    config = replace(tiny_config, wgan=replace(tiny_config.wgan, iterations=30, sample_every=10))
    recorder = LocalRecorder()
    result = _trainer(config, tmp_path, recorder, Compute(compute)).train()
    losses = [value for _, value in recorder.metrics["wgan/critic_loss"]]
    assert result.steps == 30
    assert losses[-1] < losses[0]
    assert "wgan/swd" in recorder.metrics
    assert any(path.name.startswith("wgan-") for path, _ in recorder.artifacts)


def test_resume_continues_from_the_saved_step_and_matches_an_unbroken_run(tiny_config, tmp_path):
    from dataclasses import replace

    straight = _trainer(tiny_config, tmp_path / "straight")
    straight.train()

    short = replace(tiny_config, wgan=replace(tiny_config.wgan, iterations=3))
    _trainer(short, tmp_path / "broken").train()
    assert load_checkpoint(tmp_path / "broken/checkpoints/wgan-last.pt")["wgan"]["step"] == 3

    resumed = _trainer(tiny_config, tmp_path / "broken")
    resumed.resume()
    assert resumed.step == 3
    resumed.train()
    assert resumed.step == 6
    for name, value in straight.model.generator.state_dict().items():
        assert torch.allclose(
            value.float(), resumed.model.generator.state_dict()[name].float(), atol=1e-6
        ), name


def test_sliced_wasserstein_is_zero_for_identical_sets_and_grows_with_shift():
    images = torch.rand(64, 1, 16, 16)
    assert sliced_wasserstein(images, images) == 0.0
    assert sliced_wasserstein(images, images + 0.1) < sliced_wasserstein(images, images + 0.5)
