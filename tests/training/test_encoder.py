from dataclasses import replace

import torch

from anogan.data.patches import PatchSampler
from anogan.models.fanogan import FAnoGAN
from anogan.training.encoder import EncoderTrainer
from anogan.training.monitor import LocalRecorder


def test_izif_loss_falls_and_generator_and_critic_stay_frozen(tiny_config, tmp_path):
    torch.manual_seed(0)
    model = FAnoGAN(tiny_config.model, 32)
    images = torch.rand(16, 1, 32, 32) * 2 - 1
    sampler = PatchSampler(images, torch.ones_like(images), 32, 0)
    generator_before = {k: v.clone() for k, v in model.generator.state_dict().items()}
    critic_before = {k: v.clone() for k, v in model.critic.state_dict().items()}
    config = replace(tiny_config.encoder, iterations=40, lr=1e-3)
    recorder = LocalRecorder()
    EncoderTrainer(model, sampler, config, tmp_path, recorder, 0, {}).train(sample_every=20)

    losses = [value for _, value in recorder.metrics["encoder/loss"]]
    assert losses[-1] < losses[0]
    for name, value in model.generator.state_dict().items():
        assert torch.equal(value, generator_before[name]), name
    for name, value in model.critic.state_dict().items():
        assert torch.equal(value, critic_before[name]), name
    assert (tmp_path / "checkpoints" / "encoder-last.pt").is_file()
