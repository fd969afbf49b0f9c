"""`compute.compile`: torch.compile where it is safe, the same weights' keys, a clear error
where it cannot work."""

import pytest
import torch

from anogan.compute import Compute
from anogan.config import ComputeConfig, config_from_dict
from anogan.data.patches import PatchSampler
from anogan.errors import ConfigError
from anogan.models.fanogan import FAnoGAN
from anogan.training.encoder import EncoderTrainer
from anogan.training.monitor import LocalRecorder
from anogan.training.wgan import WGANTrainer
from tests.training.weights import NETWORKS, network_differences

SMALL = {
    "data": {"image_size": 16, "patch_size": 16},
    "model": {"latent_dim": 8, "channels": [8, 16]},
    "wgan": {"iterations": 2, "batch_size": 8, "n_critic": 1, "quality_every": 0},
    "encoder": {"iterations": 2, "batch_size": 8},
}


def test_compile_without_a_cpp_compiler_is_a_config_error(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no g++, clang++ or c++
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(ConfigError, match=r"compute\.compile.*no C\+\+ compiler"):
        Compute(ComputeConfig(device="cpu", compile=True))


@pytest.mark.slow
def test_compiled_training_keeps_the_weights_keys_and_matches_eager(tmp_path):
    # Slow: inductor builds C++ kernels for each network (tens of seconds on 2 cores).
    # Fused kernels round differently, and the optimisers' first steps are nearly
    # lr * sign(gradient) (Adam; RMSprop, for izi_f, 10 lr): an element whose gradient is
    # rounding noise (a bias feeding a batch norm; a weight the frozen compiled generator's
    # backward reaches with a near-zero gradient) flips sign freely. So weights are compared as
    # tests/training/test_distributed.py compares them: per network, the mean difference over
    # the mean change training made (tests/training/weights.py). Measured: generator 6e-5,
    # critic 1e-7, encoder 1.5e-2 (max 1.9e-3: two flipped RMSprop steps of 5e-4).
    config = config_from_dict(SMALL)
    eager, compiled = (
        _train(config, ComputeConfig(device="cpu", compile=flag), tmp_path / str(flag))
        for flag in (False, True)
    )
    assert eager.keys() == compiled.keys()
    torch.manual_seed(0)
    initial = FAnoGAN(config.model, config.data.patch_size).state_dict()
    for network in NETWORKS:
        _, relative, change = network_differences(eager, compiled, initial, network)
        assert change > 1e-6, network  # it did train: the comparison can fail
        assert relative < 5e-2, network


def _train(config, compute_config, folder) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    model = FAnoGAN(config.model, config.data.patch_size)
    images = torch.rand(16, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    sampler = PatchSampler(images, torch.ones_like(images), 16, 0)
    arguments = (folder, LocalRecorder(), 0, {}, Compute(compute_config))
    WGANTrainer(model, sampler, config.wgan, *arguments).train()
    EncoderTrainer(model, sampler, config.encoder, *arguments).train(sample_every=0)
    return {key: value.detach().clone() for key, value in model.state_dict().items()}
