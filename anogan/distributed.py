"""Several processes training one model: torch.distributed set up from torchrun's environment.

`anogan train` runs unchanged under `torchrun --nproc-per-node N` (and multi-node rendezvous):
`setup` joins the process group when torchrun's variables say there is more than one rank
(NCCL on CUDA, each rank on GPU LOCAL_RANK; gloo on the CPU) and does nothing otherwise, so a
plain run stays a single process with no process group.

The contract that keeps N processes equal to one (measured in tests/training/test_distributed.py):

- a batch size in the config is global; each rank computes B / N of it;
- every rank draws the random numbers of the whole global batch (windows, latents,
  interpolation weights) from the same seeded streams and keeps its own part, the way
  `torch.utils.data.distributed.DistributedSampler` keeps `indices[rank::world]` of one shared
  permutation. The random streams of all ranks therefore stay equal, and a checkpoint of rank
  0's random state resumes every rank;
- gradients are averaged over ranks by DistributedDataParallel, and batch norm takes its
  statistics over the global batch (`nn.SyncBatchNorm` on CUDA, `GlobalBatchNorm2d` on the CPU);
- only rank 0 writes files and talks to MLflow; decisions that depend on the clock are made
  by rank 0 and broadcast (`broadcast_flag`).
"""

import datetime
import logging
import os
import re
import signal
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as distributed_functional
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from anogan.errors import ConfigError

logger = logging.getLogger(__name__)

RANK_VARIABLE, WORLD_SIZE_VARIABLE, LOCAL_RANK_VARIABLE = "RANK", "WORLD_SIZE", "LOCAL_RANK"
TIMEOUT = datetime.timedelta(minutes=30)  # how long a rank waits for the others at a collective
# How gloo words a collective that failed because a peer went away or stopped answering: a
# plain RuntimeError, "...pair.cc:553] Connection closed by peer [127.0.0.1]:15491. This is
# typically caused by a remote worker crashing..." (measured in torch 2.13). NCCL's failures
# are torch.distributed.DistError subclasses and need no wording.
PEER_FAILURE = re.compile(r"connection (closed|reset) by peer|remote worker|timed out", re.I)
# DDP's reducer warns once per process that the critic head's weight gradient, (1, F) with
# strides (1, 1) after the penalty's double backward, differs from its bucket's (F, 1): the same
# memory order for a single row, so nothing to act on.
BUCKET_STRIDE_WARNING = "Grad strides do not match bucket view strides"


@dataclass(frozen=True)
class Ranks:
    """Where this process stands: its global rank, the world size and its rank on the node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


class TerminatedError(Exception):
    """SIGTERM arrived while `sigterm_raises` was active.

    torchrun ends the surviving ranks with SIGTERM when one rank fails; a batch scheduler
    sends it at a job's time limit.
    """


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into a `TerminatedError` exception for the duration, so that the run can say
    where it stopped and how to resume; a no-op outside the main thread (where Python cannot
    set signal handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise TerminatedError(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def lost_peer(error: BaseException) -> bool:
    """True when `error` is a collective that failed because another rank went away."""
    if not isinstance(error, RuntimeError):
        return False
    return isinstance(error, dist.DistError) or bool(PEER_FAILURE.search(str(error)))


class Sampler(Protocol):
    """What `ShardedSampler` needs: PatchSampler's interface."""

    def sample(self, batch_size: int) -> torch.Tensor: ...

    def state(self) -> dict: ...

    def load_state(self, state: dict) -> None: ...


def ranks_from_environment(environment: dict[str, str] | None = None) -> Ranks:
    """The ranks torchrun announces in RANK, WORLD_SIZE and LOCAL_RANK; one rank without them.

    Raises:
        ConfigError: the variables are there but are not integers, or RANK is out of range.
    """
    environment = dict(os.environ if environment is None else environment)
    if WORLD_SIZE_VARIABLE not in environment or RANK_VARIABLE not in environment:
        return Ranks()
    try:
        rank = int(environment[RANK_VARIABLE])
        world_size = int(environment[WORLD_SIZE_VARIABLE])
        local_rank = int(environment.get(LOCAL_RANK_VARIABLE, "0"))
    except ValueError:
        raise ConfigError(
            f"environment {RANK_VARIABLE}={environment.get(RANK_VARIABLE)!r}, "
            f"{WORLD_SIZE_VARIABLE}={environment.get(WORLD_SIZE_VARIABLE)!r}: expected "
            "integers as torchrun sets them"
        ) from None
    if not 0 <= rank < max(world_size, 1):
        raise ConfigError(
            f"environment {RANK_VARIABLE}={rank} is outside 0..{world_size - 1} "
            f"({WORLD_SIZE_VARIABLE}={world_size})"
        )
    return Ranks(rank, world_size, local_rank)


def setup(device: torch.device) -> Ranks:
    """Join the process group when torchrun started more than one rank; else do nothing.

    RANK, WORLD_SIZE and LOCAL_RANK, and MASTER_ADDR and MASTER_PORT for the rendezvous, are
    read from the environment, where torchrun puts them.

    Args:
        device: the resolved compute device: CUDA selects NCCL and GPU LOCAL_RANK, the CPU gloo.

    Returns:
        This process's ranks (world size 1 for a plain run).
    """
    ranks = ranks_from_environment()
    if not ranks.enabled or is_initialized():
        return ranks
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(ranks.local_rank)
    dist.init_process_group(backend, rank=ranks.rank, world_size=ranks.world_size, timeout=TIMEOUT)
    logger.info(
        "Rank %d of %d (local rank %d) joined the %s process group",
        ranks.rank,
        ranks.world_size,
        ranks.local_rank,
        backend,
    )
    return ranks


def cleanup() -> None:
    """Leave the process group, if this process is in one."""
    if is_initialized():
        dist.destroy_process_group()


def is_initialized() -> bool:
    """True inside a process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank; 0 without a process group."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """Processes in the group; 1 without a process group."""
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    """True on the one rank that writes files, logs to MLflow and decides on time budgets."""
    return rank() == 0


def barrier() -> None:
    """Wait until every rank gets here (a no-op for one process)."""
    if is_initialized():
        dist.barrier()


def broadcast_flag(flag: bool) -> bool:
    """Rank 0's `flag` on every rank, so that all ranks take the same branch (stop or go on)."""
    if not is_initialized():
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_collective_device())
    dist.broadcast(value, src=0)
    return bool(value.item())


def broadcast_object(value: Any) -> Any:
    """Rank 0's picklable `value` on every rank (a run folder, a run state)."""
    if not is_initialized():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0, device=_collective_device())
    return holder[0]


def broadcast_module(module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers into every rank's `module`, in place."""
    if not is_initialized():
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """The mean of each value over the ranks (losses of the global batch, for logging)."""
    if not is_initialized() or not values:
        return values
    names = sorted(values)
    stacked = torch.tensor([values[name] for name in names], device=_collective_device())
    dist.all_reduce(stacked)
    return dict(zip(names, (stacked / world_size()).tolist(), strict=True))


def local_batch(global_batch: int, key: str) -> int:
    """The part of a global batch this rank computes.

    Raises:
        ConfigError: the global batch does not split evenly over the ranks.
    """
    world = world_size()
    if global_batch % world:
        raise ConfigError(
            f"config key {key!r} is {global_batch}, the global batch, which does not split "
            f"over {world} ranks; use a multiple of {world}"
        )
    return global_batch // world


def own_part(tensor: torch.Tensor) -> torch.Tensor:
    """Rows rank::world of a global batch, as DistributedSampler assigns indices."""
    return tensor[rank() :: world_size()]


class ShardedSampler:
    """This rank's part of each global batch of a sampler whose random stream all ranks share.

    Every rank draws the whole global batch (the same windows everywhere, since the samplers
    are seeded alike) and keeps rows rank::world. Drawing is a gather and costs little next
    to the networks; in exchange, one process and N processes see the same windows.

    Args:
        sampler: anything with PatchSampler's `sample`, `state` and `load_state`.
    """

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler

    def sample(self, global_batch: int) -> torch.Tensor:
        """This rank's (global_batch / world, ...) part of one global batch."""
        return own_part(self.sampler.sample(global_batch))


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose batch statistics are those of the global batch, on any device.

    In training mode under a process group, per-channel sums, sums of squares and counts are
    summed over the ranks with the differentiable `torch.distributed.nn.functional.all_reduce`,
    so the normalisation and its gradients equal those of one process seeing the whole batch;
    the running statistics are updated from the global figures and so stay equal on all ranks.
    Otherwise it is `nn.BatchNorm2d`, with the same parameters, buffers and state_dict keys.

    NOTE: `nn.SyncBatchNorm` does the same but refuses CPU tensors in torch 2.13; on CUDA
    `distribute_batch_norm` uses it instead.
    """

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Args: features: (B, C, H, W). Returns: normalised (B, C, H, W)."""
        if not (self.training and is_initialized() and world_size() > 1):
            return super().forward(features)
        batch, channels, height, width = features.shape
        values = features.to(torch.promote_types(features.dtype, torch.float32))
        count = torch.full((1,), batch * height * width, dtype=values.dtype, device=values.device)
        local = torch.cat([values.sum(dim=(0, 2, 3)), values.square().sum(dim=(0, 2, 3)), count])
        with warnings.catch_warnings():
            # NOTE: torch 2.13 marks this differentiable all_reduce deprecated in favour of the
            # private `_functional_collectives`; it is still the public autograd-aware one.
            warnings.simplefilter("ignore", FutureWarning)
            total = distributed_functional.all_reduce(local)  # (2C + 1,) over all ranks
        sums, squares, count = total[:channels], total[channels : 2 * channels], total[-1]
        mean = sums / count  # (C,)
        variance = (squares / count - mean.square()).clamp_min(0.0)  # (C,), biased
        self._update_running(mean, variance, count)

        scale = (variance + self.eps).rsqrt()
        if self.affine:
            shift = self.bias - mean * scale * self.weight
            scale = scale * self.weight
        else:
            shift = -mean * scale
        output = values * scale.view(1, channels, 1, 1) + shift.view(1, channels, 1, 1)
        return output.to(features.dtype)

    @torch.no_grad()
    def _update_running(
        self, mean: torch.Tensor, variance: torch.Tensor, count: torch.Tensor
    ) -> None:
        """Running statistics from the global (C,) mean, biased variance and element count."""
        if not self.track_running_stats or self.running_mean is None:
            return
        unbiased_variance = variance * count / (count - 1).clamp_min(1)
        self.num_batches_tracked.add_(1)
        # As nn.BatchNorm2d: momentum None means a cumulative average.
        factor = self.momentum
        if factor is None:
            factor = 1.0 / float(self.num_batches_tracked)
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased_variance.to(self.running_var.dtype), factor)


def distribute_batch_norm(module: nn.Module, device: torch.device) -> nn.Module:
    """Make every nn.BatchNorm2d in `module` use global batch statistics, in place.

    On CUDA this is `nn.SyncBatchNorm.convert_sync_batchnorm`; elsewhere each BatchNorm2d
    becomes a `GlobalBatchNorm2d` holding the same parameter and buffer tensors. State_dict
    keys do not change, so checkpoints and model files load into the plain model.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    for name, child in module.named_children():
        if type(child) is nn.BatchNorm2d:
            setattr(module, name, _global_copy(child))
        else:
            distribute_batch_norm(child, device)
    return module


def data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """`module` wrapped in DistributedDataParallel under a process group, else as it is.

    Rank 0's parameters and buffers are copied to all ranks once, here; buffers are not
    synchronised at each forward: the only buffers are batch-norm running statistics, which
    global batch norm keeps equal on every rank.
    """
    if not is_initialized():
        return module
    warnings.filterwarnings("ignore", message=BUCKET_STRIDE_WARNING, category=UserWarning)
    device_ids = None
    if device.type == "cuda":
        device_ids = [device.index if device.index is not None else torch.cuda.current_device()]
    return DistributedDataParallel(module, device_ids=device_ids, forward_sync_buffers=False)


def _global_copy(norm: nn.BatchNorm2d) -> GlobalBatchNorm2d:
    replacement = GlobalBatchNorm2d(
        norm.num_features, norm.eps, norm.momentum, norm.affine, norm.track_running_stats
    )
    if norm.affine:
        replacement.weight, replacement.bias = norm.weight, norm.bias
    if norm.track_running_stats:
        replacement.running_mean = norm.running_mean
        replacement.running_var = norm.running_var
        replacement.num_batches_tracked = norm.num_batches_tracked
    replacement.train(norm.training)
    return replacement


def _collective_device() -> torch.device:
    """Where tensors for collectives live: the current GPU for NCCL, else the CPU."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")
