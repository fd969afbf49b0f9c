"""MLflow tracking: the one module that imports mlflow.

The tracking URI is `MLFLOW_TRACKING_URI` when set, else the config's (default
`sqlite:///mlflow.db` in the working folder; the old `./mlruns` file store is refused by
MLflow 3). A run records the resolved config as params, metrics per step (buffered and sent in
batches), sample grids, curves and the model folder, which `runs:/<run id>/model` finds again.

An `http(s)://` URI names a shared `mlflow server`; it is probed once (GET /health) before a
run starts or a model is fetched, so that a server that is down is one TrackingError at once
rather than minutes of MLflow's own retries.
"""

import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import mlflow
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from anogan.config import TrackingConfig
from anogan.errors import TrackingError

logger = logging.getLogger(__name__)

METRIC_BUFFER = 200  # metric values collected before one batch write
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
REACHABILITY_TIMEOUT = 5.0  # seconds the server has to answer GET /health
SERVER_SCHEMES = ("http", "https")  # URI schemes that name a tracking server


def tracking_uri(config: TrackingConfig) -> str:
    """MLFLOW_TRACKING_URI if set, else the config's URI."""
    return os.environ.get("MLFLOW_TRACKING_URI") or config.tracking_uri


def check_reachable(uri: str, timeout: float = REACHABILITY_TIMEOUT) -> None:
    """Fail at once when a tracking server URI does not answer; other URIs pass untouched.

    Any HTTP answer counts as reachable (a server behind authentication may refuse /health);
    only a refused connection, a timeout or an unknown host is an error.

    Args:
        uri: the tracking URI, e.g. `http://127.0.0.1:5000` or `sqlite:///mlflow.db`.
        timeout: seconds to wait for the answer.

    Raises:
        TrackingError: nothing answers at `uri`.
    """
    if urllib.parse.urlparse(uri).scheme not in SERVER_SCHEMES:
        return
    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout):
            pass
    except urllib.error.HTTPError as error:
        logger.debug("%s answered HTTP %d; taking the server as up", health, error.code)
    # URLError, TimeoutError and ConnectionError are all OSErrors: the socket-level failures.
    except OSError as error:
        reason = getattr(error, "reason", error)
        where = (
            "unset MLFLOW_TRACKING_URI"
            if os.environ.get("MLFLOW_TRACKING_URI")
            else "set tracking.tracking_uri to a running one"
        )
        raise TrackingError(
            f"MLflow tracking server {uri} is not reachable ({reason}): start the server or {where}"
        ) from error


class MlflowRecorder:
    """One MLflow run, started (or resumed by id) on creation.

    Args:
        config: URI and experiment name.
        run_name: shown in the MLflow UI.
        run_id: resume this run instead of starting one.

    Raises:
        TrackingError: the URI names a tracking server that does not answer.
    """

    def __init__(self, config: TrackingConfig, run_name: str, run_id: str | None = None) -> None:
        self.uri = tracking_uri(config)
        check_reachable(self.uri)
        self.client = MlflowClient(tracking_uri=self.uri)
        if run_id is None:
            experiment = self.client.get_experiment_by_name(config.experiment)
            experiment_id = (
                experiment.experiment_id
                if experiment is not None
                else self.client.create_experiment(config.experiment)
            )
            run = self.client.create_run(experiment_id, run_name=run_name)
            run_id = run.info.run_id
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.run_id: str = run_id
        self._buffer: list[Metric] = []
        logger.info("MLflow run %s at %s", self.run_id, self.uri)

    def log_params(self, params: dict[str, str]) -> None:
        for name, value in params.items():
            self.client.log_param(self.run_id, name, str(value)[:MAX_PARAM_LENGTH])

    def set_tags(self, tags: dict[str, str]) -> None:
        for name, value in tags.items():
            self.client.set_tag(self.run_id, name, str(value)[:MAX_PARAM_LENGTH])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        timestamp = int(time.time() * 1000)
        for name, value in metrics.items():
            self._buffer.append(Metric(name.replace("@", "_at_"), float(value), timestamp, step))
        if len(self._buffer) >= METRIC_BUFFER:
            self.flush()

    def flush(self) -> None:
        if self._buffer:
            self.client.log_batch(self.run_id, metrics=self._buffer)
            self._buffer = []

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path=folder)

    def log_artifacts(self, path: Path, folder: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(path), artifact_path=folder)

    def finish(self, status: str = "FINISHED") -> None:
        """Flush metrics and close the run (`FINISHED`, `FAILED` or `KILLED`)."""
        self.flush()
        self.client.set_terminated(self.run_id, status=status)


def download_model(uri: str, destination: Path | None = None) -> Path:
    """Fetch a logged model folder, `runs:/<run id>/model` or any MLflow artifact URI.

    Uses MLFLOW_TRACKING_URI, else the default sqlite store in the working folder.

    Raises:
        TrackingError: the URI names a tracking server that does not answer.
    """
    store = tracking_uri(TrackingConfig())
    check_reachable(store)
    mlflow.set_tracking_uri(store)
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=uri, dst_path=str(destination) if destination else None
    )
    return Path(local)
