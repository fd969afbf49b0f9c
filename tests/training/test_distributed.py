"""Training on several processes: N gloo ranks equal one process; a lost rank fails the run
and `--resume` finishes it. Real process groups on the CPU, no stand-ins."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as multiprocessing
import yaml

from anogan import distributed
from anogan.compute import Compute
from anogan.config import ComputeConfig, config_from_dict
from anogan.data.patches import PatchSampler
from anogan.errors import ConfigError
from anogan.models.fanogan import FAnoGAN
from anogan.training.checkpoint import load_checkpoint, load_model
from anogan.training.encoder import EncoderTrainer
from anogan.training.monitor import LocalRecorder
from anogan.training.wgan import WGANTrainer
from tests.training.weights import NETWORKS, network_differences

ROOT = Path(__file__).resolve().parents[2]
# fp32 on the CPU: one process and two differ only by the order of float sums (batch-norm
# statistics, gradient averaging). Adam turns a flipped sign of a near-zero gradient (the bias
# of a convolution that feeds a batch norm has a gradient of pure rounding) into a step of about
# lr, so the generator is compared by its mean absolute difference over the mean change that
# training made. Measured: generator 3e-5 of it (max 1.6e-4, that bias); critic and encoder
# agree to 3e-8 at most. With per-rank batch norm instead of global: generator 0.35, critic 0.08.
RELATIVE_TOLERANCE = 1e-3
ABSOLUTE_TOLERANCE = 1e-6  # critic and encoder: no batch norm, so no gradient of pure rounding
SMALL = {
    "seed": 0,
    "compute": {"device": "cpu"},
    "data": {"image_size": 32, "patch_size": 16},
    "model": {"latent_dim": 16, "channels": [8, 16]},
    "wgan": {
        "iterations": 5,
        "batch_size": 8,
        "n_critic": 2,
        "sample_every": 2,
        "quality_every": 2,
        "checkpoint_every": 2,
    },
    "encoder": {"iterations": 3, "batch_size": 8, "checkpoint_every": 2},
    "scoring": {"batch_size": 16},
}


def test_two_gloo_ranks_train_the_same_networks_as_one_process(tmp_path):
    started = time.monotonic()
    single = _train_both_stages(tmp_path / "single")
    torch.save(single, tmp_path / "single.pt")

    port = _free_port()
    arguments = (2, port, tmp_path / "double", tmp_path / "single.pt")
    multiprocessing.start_processes(_rank_main, args=arguments, nprocs=2, start_method="spawn")
    double = torch.load(tmp_path / "double" / "networks.pt")

    torch.manual_seed(0)
    initial = FAnoGAN(config_from_dict(SMALL).model, 16).state_dict()
    assert single.keys() == double.keys()
    assert "generator.blocks.0.main.0.running_mean" in double  # plain batch-norm keys
    for network in NETWORKS:
        worst, relative, change = network_differences(single, double, initial, network)
        assert change > 1e-5, network  # it did train: the comparison can fail
        assert relative < RELATIVE_TOLERANCE, network
        if network != "generator":
            assert worst < ABSOLUTE_TOLERANCE, network
    print(f"took {time.monotonic() - started:.1f} s")


@pytest.mark.slow
def test_a_killed_rank_fails_the_run_and_resume_finishes_it(tmp_path, tiny_demo):
    # Slow: two torchrun launches of the whole pipeline, 3 processes importing torch each;
    # one tiny torchrun pipeline took 15 s on a quiet 2-core machine, this test 5 minutes
    # niced beside a benchmark.
    config = {
        **SMALL,
        "output_dir": str(tmp_path / "runs"),
        "data": {"image_size": 64, "patch_size": 16},
        # No grids or SWD on the way: the test is about the checkpoint, the kill and resuming.
        "wgan": {**SMALL["wgan"], "iterations": 100000, "sample_every": 0, "quality_every": 0},
        "encoder": {**SMALL["encoder"], "iterations": 2},
    }
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    command = [
        *_torchrun(2),
        "--config",
        str(config_path),
        "--data",
        str(tiny_demo),
        "--no-mlflow",
    ]
    log = tmp_path / "killed.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            command, cwd=ROOT, env=_environment(), stdout=output, stderr=subprocess.STDOUT
        )
        try:
            checkpoint = _wait_for(
                lambda: next((tmp_path / "runs").glob("2*/checkpoints/wgan-last.pt"), None),
                process,
                log,
            )
            os.kill(_worker_pid(process.pid, rank=1), signal.SIGKILL)
            process.wait(timeout=300)
        finally:
            process.kill()
    text = log.read_text(errors="replace")
    assert process.returncode != 0
    assert "pipelines.train_healthy FAILED" in text
    assert re.search(r"rank\s*:\s*1 .*\n.*exitcode\s*:\s*-9", text), text[-3000:]
    assert "Signal 9 (SIGKILL)" in text

    run_dir = checkpoint.parents[1]
    # Rank 0 says why it stopped, which run and how to resume: torchrun's SIGTERM, or gloo's
    # closed connection, whichever reaches it first.
    survivor = (
        r"anogan train: error: rank 0 of 2 (stopped by SIGTERM|lost contact with another rank)"
    )
    resume_hint = (
        rf"the run in {re.escape(str(run_dir))} resumes .* `--resume {re.escape(str(run_dir))}`"
    )
    found = re.search(survivor + ".*" + resume_hint, text)
    assert found, text[-3000:]
    print(found.group(0))
    saved_step = int(load_checkpoint(checkpoint)["wgan"]["step"])
    assert saved_step >= 2 and not (run_dir / "model").exists()
    resume = [
        *_torchrun(2),
        "--resume",
        str(run_dir),
        "--no-mlflow",
        "--set",
        f"wgan.iterations={saved_step + 3}",
    ]
    finished = subprocess.run(
        resume, cwd=ROOT, env=_environment(), capture_output=True, text=True, timeout=900
    )
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-3000:]
    assert f"Resumed WGAN-GP at step {saved_step}" in finished.stderr
    assert int(load_checkpoint(checkpoint)["wgan"]["step"]) == saved_step + 3
    model = load_model(run_dir / "model")
    assert model.config.wgan.iterations == saved_step + 3
    assert "Model:" in finished.stdout and finished.stdout.count("Model:") == 1


def test_torchrun_variables_are_read_and_checked():
    assert not distributed.ranks_from_environment({}).enabled  # a plain run: no process group
    ranks = distributed.ranks_from_environment({"RANK": "1", "WORLD_SIZE": "3", "LOCAL_RANK": "1"})
    assert (ranks.rank, ranks.world_size, ranks.local_rank, ranks.enabled) == (1, 3, 1, True)
    with pytest.raises(ConfigError, match=r"RANK=5 is outside 0\.\.1"):
        distributed.ranks_from_environment({"RANK": "5", "WORLD_SIZE": "2"})


def test_only_failures_of_a_peer_count_as_a_lost_rank():
    gloo = "[/gloo/transport/tcp/pair.cc:553] Connection closed by peer [127.0.0.1]:15491."
    assert distributed.lost_peer(RuntimeError(gloo))
    assert distributed.lost_peer(torch.distributed.DistBackendError("NCCL communicator aborted"))
    assert not distributed.lost_peer(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not distributed.lost_peer(ValueError("Connection closed by peer"))


def _train_both_stages(folder: Path, wgan_result: Path | None = None) -> dict[str, torch.Tensor]:
    """WGAN-GP then izi_f on the SMALL config; the state_dict of the trained triple.

    Args:
        folder: the run folder.
        wgan_result: a state_dict of another run whose generator and critic izi_f starts from,
            so that the encoders compare on their own (the triple returned keeps this run's
            generator and critic).
    """
    config = config_from_dict(SMALL)
    torch.manual_seed(0)
    model = FAnoGAN(config.model, config.data.patch_size)
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(24, 1, 32, 32, generator=generator) * 0.5 - 0.25
    images[:, :, 8:24, 8:24] += 0.5  # a bright square: something to learn
    masks = (images > 0).float()
    sampler = PatchSampler(images, masks, config.data.patch_size, config.seed)
    compute = Compute(ComputeConfig(device="cpu"))
    arguments = (folder, LocalRecorder(), config.seed, {}, compute)
    wgan = WGANTrainer(model, sampler, config.wgan, *arguments)
    wgan.train()
    wgan.load_best()
    trained = {key: value.detach().clone() for key, value in model.state_dict().items()}
    if wgan_result is not None:
        other = torch.load(wgan_result)
        model.load_state_dict(
            {k: v for k, v in other.items() if not k.startswith("encoder")}, strict=False
        )
    EncoderTrainer(model, sampler, config.encoder, *arguments).train(sample_every=2)
    encoder = {key: value.detach().clone() for key, value in model.state_dict().items()}
    return {**trained, **{key: encoder[key] for key in encoder if key.startswith("encoder")}}


def _rank_main(rank: int, world: int, port: int, folder: Path, wgan_result: Path) -> None:
    torch.set_num_threads(1)
    environment = {
        "RANK": str(rank),
        "WORLD_SIZE": str(world),
        "LOCAL_RANK": str(rank),
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port),
    }
    os.environ.update(environment)
    distributed.setup(torch.device("cpu"))
    try:
        with pytest.raises(ConfigError, match=r"'wgan.batch_size' is 7.*multiple of 2"):
            distributed.local_batch(7, "wgan.batch_size")
        networks = _train_both_stages(folder, wgan_result)
        if rank == 0:
            torch.save(networks, folder / "networks.pt")
    finally:
        distributed.cleanup()


def _torchrun(processes: int) -> list[str]:
    torchrun = Path(sys.executable).with_name("torchrun")
    launcher = [str(torchrun), "--standalone", f"--nproc-per-node={processes}"]
    return [*launcher, "-m", "pipelines.train_healthy"]


def _environment() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for(find, process: subprocess.Popen, log: Path, timeout: float = 900.0):
    """What `find` returns once it is not None, while `process` runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        found = find()
        if found is not None:
            return found
        time.sleep(0.2)
    pytest.fail(f"no checkpoint after {timeout:.0f} s; torchrun said:\n{log.read_text()[-3000:]}")


def _worker_pid(parent: int, rank: int) -> int:
    """The pid of torchrun's worker of `rank`, found through /proc (children, environment)."""
    for pid in _descendants(parent):
        try:
            environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"RANK={rank}".encode() in environment:
            return pid
    pytest.fail(f"no worker of rank {rank} under pid {parent}")


def _descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        children = (task / "children").read_text().split()
        for child in map(int, children):
            found += [child, *_descendants(child)]
    return found
