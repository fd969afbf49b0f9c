"""Runs tracked through a real, shared `mlflow server` with a sqlite backend on 127.0.0.1.

One server serves the module: it is started in its own process group, so that stopping the group
also stops the uvicorn worker it spawns, and teardown checks that no process of it survives.
Artifacts are proxied (`--serve-artifacts`): a client that only knows the http URI uploads and
downloads the model through the server.
"""

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from anogan.config import TrackingConfig, config_from_dict
from anogan.errors import TrackingError
from anogan.tracking import MlflowRecorder, download_model
from anogan.training.checkpoint import load_model
from pipelines.train_healthy import TrainingSummary, run_training
from tests.conftest import TINY

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT = 60.0  # seconds for the server to answer /health (about 5-10 s here)
STOP_TIMEOUT = 15.0  # seconds for the process group to leave after SIGTERM
STDERR_TAIL = 2000  # characters of the server's stderr shown when it does not come up
FAST_FAILURE = 3.0  # seconds an unreachable server may take to be reported


@dataclass(frozen=True)
class ServerInfo:
    """A running tracking server: its URI and where it keeps runs and artifacts."""

    uri: str
    database: Path
    artifacts: Path


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerInfo]:
    """A real `mlflow server` on a free port, stopped by process group at the end."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    database, artifacts = root / "server.db", root / "artifacts"
    command = [
        *_mlflow_command(),
        "server",
        "--backend-store-uri",
        f"sqlite:///{database}",
        "--serve-artifacts",
        "--artifacts-destination",
        str(artifacts),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    environment = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    environment.pop("MLFLOW_TRACKING_URI", None)
    stderr_path = root / "server.stderr"
    with open(root / "server.stdout", "wb") as stdout, open(stderr_path, "wb") as stderr:
        server = subprocess.Popen(
            command,
            cwd=root,
            env=environment,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
    group = os.getpgid(server.pid)
    uri = f"http://127.0.0.1:{port}"
    try:
        seconds = _wait_until_healthy(uri, server, stderr_path)
        logger.info("mlflow server ready at %s after %.1f s", uri, seconds)
        yield ServerInfo(uri, database, artifacts)
    finally:
        _stop_group(server, group)
    with pytest.raises(ProcessLookupError):
        os.killpg(group, 0)


@pytest.fixture(scope="module")
def served_run(
    mlflow_server: ServerInfo, tiny_demo: Path, tmp_path_factory: pytest.TempPathFactory
) -> TrainingSummary:
    """The tiny training pipeline, tracked through the server."""
    output_dir = tmp_path_factory.mktemp("served-runs")
    config = config_from_dict({**TINY, "output_dir": str(output_dir)})
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
        return run_training(config, str(tiny_demo), track=True)


def test_training_logs_params_metrics_and_model_through_the_server(
    mlflow_server: ServerInfo, served_run: TrainingSummary, monkeypatch, tmp_path
):
    client = MlflowClient(tracking_uri=mlflow_server.uri)
    run = client.get_run(served_run.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["wgan.n_critic"] == "2"
    assert run.data.params["model.latent_dim"] == "16"
    assert run.data.metrics["threshold"] == served_run.metrics["threshold"]
    assert "baseline_std/roc_auc" in run.data.metrics
    assert len(client.get_metric_history(served_run.run_id, "wgan/critic_loss")) >= 1

    # Proxied artifacts: the run points at the server, the files land in its destination.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    logged = {item.path for item in client.list_artifacts(served_run.run_id, "model")}
    assert {"model/model.pt", "model/config.yaml", "model/metrics.json"} <= logged
    stored = list(mlflow_server.artifacts.rglob("model.pt"))
    assert len(stored) == 1 and served_run.run_id in stored[0].parts

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    folder = download_model(f"runs:/{served_run.run_id}/model", tmp_path / "downloaded")
    downloaded, local = load_model(folder), load_model(served_run.model_path)
    assert downloaded.calibration["threshold"] == served_run.metrics["threshold"]
    local_state = local.model.state_dict()
    for name, tensor in downloaded.model.state_dict().items():
        assert torch.equal(tensor, local_state[name]), name


def test_a_second_client_process_sees_the_same_run(
    mlflow_server: ServerInfo, served_run: TrainingSummary
):
    # A fresh interpreter that knows only the URI, as a colleague's machine would.
    snippet = (
        "import json, sys\n"
        "from mlflow.tracking import MlflowClient\n"
        "client = MlflowClient(tracking_uri=sys.argv[1])\n"
        "experiment = client.get_experiment_by_name('anogan')\n"
        "runs = client.search_runs([experiment.experiment_id])\n"
        "run = client.get_run(sys.argv[2])\n"
        "print(json.dumps({'ids': [r.info.run_id for r in runs], 'status': run.info.status,\n"
        "    'threshold': run.data.metrics['threshold'],\n"
        "    'model': [a.path for a in client.list_artifacts(run.info.run_id, 'model')]}))\n"
    )
    environment = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    result = subprocess.run(
        [sys.executable, "-c", snippet, mlflow_server.uri, served_run.run_id],
        capture_output=True,
        text=True,
        env=environment,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-STDERR_TAIL:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert served_run.run_id in seen["ids"]
    assert seen["status"] == "FINISHED"
    assert seen["threshold"] == served_run.metrics["threshold"]
    assert "model/model.pt" in seen["model"]


def test_an_unreachable_server_fails_fast_with_one_line(monkeypatch):
    # Retries off, so that a missing probe shows as a wrong error, not as a hang.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    # A port bound but not listening: connections to it are refused while the socket is held.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{holder.getsockname()[1]}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)

        started = time.monotonic()
        with pytest.raises(TrackingError) as raised:
            MlflowRecorder(TrackingConfig(), "unreachable")
        assert time.monotonic() - started < FAST_FAILURE
        message = str(raised.value)
        assert "\n" not in message
        assert uri in message and "start the server" in message
        assert "unset MLFLOW_TRACKING_URI" in message

        with pytest.raises(TrackingError, match="unset MLFLOW_TRACKING_URI"):
            download_model("runs:/0123456789abcdef/model")

        # From the config rather than the environment: the message names the config key.
        monkeypatch.delenv("MLFLOW_TRACKING_URI")
        with pytest.raises(TrackingError, match=r"tracking\.tracking_uri"):
            MlflowRecorder(TrackingConfig(tracking_uri=uri), "unreachable")


def _mlflow_command() -> list[str]:
    script = Path(sys.executable).parent / "mlflow"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "mlflow"]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_healthy(uri: str, server: subprocess.Popen, stderr_path: Path) -> float:
    started = time.monotonic()
    while time.monotonic() - started < STARTUP_TIMEOUT:
        if server.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:
                if answer.status == 200:
                    return time.monotonic() - started
        except OSError:
            logger.debug("mlflow server at %s not up yet", uri)
        time.sleep(0.25)
    tail = stderr_path.read_text(errors="replace")[-STDERR_TAIL:]
    pytest.fail(
        f"mlflow server at {uri} not healthy after {time.monotonic() - started:.0f} s "
        f"(exit code {server.poll()}); its stderr ends:\n{tail}"
    )


def _stop_group(server: subprocess.Popen, group: int) -> None:
    """SIGTERM the whole group, then SIGKILL what is left after STOP_TIMEOUT."""
    for stop_signal in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(group, stop_signal)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline:
            server.poll()  # reap the main process so that it does not linger as a zombie
            try:
                os.killpg(group, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
