"""Where and how tensors are computed: device, numeric precision, memory layout.

One small module so that training, scoring and the benchmarks make the same choices. What each
option buys on the machine at hand is printed by `make bench`; on the 2-core AMD EPYC CPUs of
the development machines (AVX512-BF16) bf16 autocast with channels-last tensors is the fast
combination. No GPU figures have been measured yet.

`compute.compile` compiles chosen networks with torch.compile (inductor) in place: their
state_dict keys do not change, so checkpoints and model files load with or without it.
"""

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from anogan.config import ComputeConfig
from anogan.errors import ConfigError

logger = logging.getLogger(__name__)

CPU_COMPILERS = ("g++", "clang++", "c++")  # what inductor can build CPU kernels with


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
        if config.compile:
            _check_compiler(self.device)

    def module(self, module: nn.Module, compiled: Sequence[nn.Module] = ()) -> nn.Module:
        """Move a module to the device (and to channels-last where configured), in place.

        Args:
            module: the module to move.
            compiled: parts of `module` whose forward passes torch.compile is to compile, in
                place (`nn.Module.compile`), when `compute.compile` is on. Only parts that are
                never differentiated twice: inductor's backward has no double backward, so a
                critic under a gradient penalty stays eager.
        """
        module = module.to(device=self.device, memory_format=self.memory_format)
        if self.config.compile:
            for part in compiled:
                part.compile()
        return module

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
        compiled = " compiled" if self.config.compile else ""
        return f"{self.device} {self.config.precision} {layout}{compiled}"


def _check_compiler(device: torch.device) -> None:
    """Raise a ConfigError when torch.compile cannot build kernels for `device` here.

    Raises:
        ConfigError: no C++ compiler for CPU kernels, or no triton for CUDA kernels.
    """
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            raise ConfigError(
                "config key 'compute.compile' is true but triton, which torch.compile needs "
                "for CUDA kernels, is not installed; install it or use --set compute.compile=false"
            ) from None
        return
    names = [os.environ["CXX"]] if os.environ.get("CXX") else list(CPU_COMPILERS)
    if not any(shutil.which(name) for name in names):
        raise ConfigError(
            "config key 'compute.compile' is true but no C++ compiler "
            f"({', '.join(names)}) is on PATH for torch.compile's CPU kernels; install g++ "
            "or use --set compute.compile=false"
        )
