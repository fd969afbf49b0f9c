"""Where and how tensors are computed: device, numeric precision, memory layout.

One small module so that training, scoring and the benchmarks make the same choices. What each
option buys on the machine at hand is printed by `make bench`; on the 2-core AMD EPYC CPUs of
the development machines (AVX512-BF16) bf16 autocast with channels-last tensors is the fast
combination. No GPU figures have been measured yet.
"""

import contextlib
import logging
from collections.abc import Iterator

import torch
from torch import nn

from anogan.config import ComputeConfig
from anogan.errors import ConfigError

logger = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """The torch device for a `compute.device` value.

    Raises:
        ConfigError: a CUDA device is asked for where none is available, or the name is not a
            device.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"config key 'compute.device': {name!r} is not a device; use auto, cpu or cuda[:N]"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"config key 'compute.device' is {name!r} but this machine has no usable CUDA GPU; "
            "use --set compute.device=cpu (or auto)"
        )
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"config key 'compute.device': {name!r} is not supported; use cpu, cuda")
    return device


class Compute:
    """The resolved compute settings, with helpers to place modules and tensors.

    Args:
        config: the `compute` section of the run config.
    """

    def __init__(self, config: ComputeConfig) -> None:
        self.config = config
        self.device = resolve_device(config.device)
        self.memory_format = (
            torch.channels_last if config.channels_last else torch.contiguous_format
        )
        if config.threads > 0:
            torch.set_num_threads(config.threads)

    def module(self, module: nn.Module) -> nn.Module:
        """Move a module to the device (and to channels-last where configured), in place."""
        return module.to(device=self.device, memory_format=self.memory_format)

    def images(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images on the device, in the configured memory layout."""
        return images.to(device=self.device, memory_format=self.memory_format, non_blocking=True)

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Run the enclosed forward passes in the configured precision."""
        with torch.autocast(
            self.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16"
        ):
            yield

    def describe(self) -> str:
        """One line for logs: device, precision, layout."""
        layout = "channels-last" if self.config.channels_last else "NCHW"
        return f"{self.device} {self.config.precision} {layout}"
