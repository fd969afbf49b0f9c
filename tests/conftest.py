"""Shared fixtures: tiny configs and data sets made by the tests themselves."""

from pathlib import Path

import pytest
import torch

from anogan.config import config_from_dict
from anogan.data.demo import DemoSpec, build_demo

TINY = {
    "seed": 0,
    "data": {"image_size": 32, "patch_size": 32},
    "model": {"latent_dim": 16, "channels": [8, 16, 32, 64]},
    "wgan": {
        "iterations": 6,
        "batch_size": 8,
        "n_critic": 2,
        "sample_every": 3,
        "quality_every": 3,
        "checkpoint_every": 3,
    },
    "encoder": {"iterations": 6, "batch_size": 8, "checkpoint_every": 3},
    "scoring": {"batch_size": 16},
}


@pytest.fixture(autouse=True)
def _single_thread():
    """Tests use one thread: two test processes on two cores must not oversubscribe them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_config(tmp_path: Path):
    """A config small enough to train in seconds, writing under tmp_path."""
    return config_from_dict({**TINY, "output_dir": str(tmp_path / "runs")})


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """A small demo set: 40 healthy training slices, 12 healthy and 12 lesion validation."""
    root = tmp_path_factory.mktemp("demo")
    return build_demo(root, DemoSpec(train_healthy=40, val_healthy=12, val_lesion=12, size=64))


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory) -> str:
    """One real sqlite MLflow store for the whole session (creating one takes seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
