import pytest
import torch

from anogan.compute import Compute, resolve_device
from anogan.config import ComputeConfig, ModelConfig
from anogan.errors import ConfigError
from anogan.models.fanogan import FAnoGAN


def test_auto_resolves_to_an_available_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_missing_gpu_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"compute\.device.*no usable CUDA"):
        resolve_device("cuda")


def test_a_name_that_is_no_device_is_a_config_error():
    with pytest.raises(ConfigError, match=r"compute\.device"):
        resolve_device("gpu0")


def test_one_critic_pass_over_two_batches_equals_two_passes():
    # The trainers and the score feed real and fake images through the critic together; that is
    # only right because nothing in the critic couples the samples of a batch.
    torch.manual_seed(0)
    critic = FAnoGAN(ModelConfig(latent_dim=8, channels=(8, 16, 32)), 32).critic.eval()
    first, second = torch.rand(3, 1, 32, 32), torch.rand(5, 1, 32, 32)
    together = critic.features(torch.cat([first, second]))
    apart = torch.cat([critic.features(first), critic.features(second)])
    assert torch.allclose(together, apart, atol=1e-5)


def test_bf16_channels_last_scores_stay_close_to_fp32():
    torch.manual_seed(0)
    model = FAnoGAN(ModelConfig(latent_dim=16, channels=(8, 16, 32, 64)), 32).eval()
    images = torch.rand(4, 1, 32, 32) * 2 - 1
    with torch.inference_mode():
        exact = model.anomaly(images).score
    compute = Compute(ComputeConfig(device="cpu", precision="bf16", channels_last=True))
    compute.module(model)
    with torch.inference_mode(), compute.autocast():
        fast = model.anomaly(compute.images(images)).score
    assert fast.dtype == torch.float32
    assert torch.allclose(fast, exact, rtol=0.05)
