"""Logging that outlives a tracking-server outage.

Each HTTP request of the MLflow client retries with exponential backoff for about
`tracking.outage_limit_seconds` (MLflow's own retries, set once per job by `use_outage_limit`), so a
server restart only delays logging. Epoch metrics are sent from a background thread, so training never
waits for the server. When a request still fails after that time, the server is taken as lost for this
run: from then on metrics go to `<job>/offline/metrics.csv`, the model is saved to `<job>/offline/model`,
the artifacts stay in `<job>/artifacts`, and the job ends with ServerLost, which names the folder and the
`python -m retina_seg.upload` command that finishes the run later. A server that answers but refuses a
batch of metrics (a revoked permission, a deleted run) is reported once, with its reason, and that batch
and every later one are kept in the same file, so nothing is lost; the job ends with ServerLost as well.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import queue
import threading
import time
from pathlib import Path
from typing import Callable, Dict, List

import mlflow
import requests
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from retina_seg.config import TrackingConfig
from retina_seg.tracking import artifacts

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.csv"
RUN_FILE = "run.json"
MAX_BACKOFF = 120  # urllib3 caps a single wait at 120 s; MLflow caps the retry count at 10


def retry_settings(limit: float) -> Dict[str, str]:
    """MLflow client retry settings whose total backoff (sum of min(120, factor * 2**k), k = 1..retries-1)
    is the smallest one reaching `limit` seconds."""
    best = None
    for factor in range(1, 121):
        for retries in range(1, 11):
            total = sum(min(MAX_BACKOFF, factor * 2 ** k) for k in range(1, retries))
            if total >= limit and (best is None or total < best[0]):
                best = (total, retries, factor)
    _, retries, factor = best or (None, 10, MAX_BACKOFF)
    return {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(retries), "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(factor),
            "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0"}


def unreachable(exc: BaseException) -> bool:
    """True for a server that did not answer (refused, reset, timed out, 5xx) after all retries, as opposed
    to one that answered with an error about the request."""
    if isinstance(exc, requests.RequestException):
        return exc.response is None or exc.response.status_code >= 500
    if isinstance(exc, MlflowException):
        status = exc.get_http_status_code()
        return "failed with exception" in str(exc) or status >= 500 and "error code" in str(exc)
    return isinstance(exc, OSError)


def use_outage_limit(cfg: TrackingConfig) -> None:
    """Make every MLflow request of this process retry for `cfg.outage_limit_seconds`. MLflow reads these
    settings from the environment on each request, so this is called once per job before any of its threads
    starts (the heartbeat and metric threads read the environment on every request they make)."""
    os.environ.update(retry_settings(cfg.outage_limit_seconds))


class ServerLost(RuntimeError):
    """The server stayed unreachable past the outage limit, or refused the run's metrics; the message says where
    the run's files are."""


class Outbox:
    """Where one training run's metrics, artifacts and model go: its MLflow run while the server answers,
    the local folder `<workdir>/offline` (plus the staged artifacts) once it has been lost."""

    def __init__(self, cfg: TrackingConfig, run_id: str, workdir: Path):
        self.cfg, self.run_id, self.workdir = cfg, run_id, workdir
        self.offline = workdir / "offline"
        self.client = MlflowClient(cfg.uri)
        self.lost: str | None = None  # why the server counts as lost (set once, by either thread)
        self.refused: str | None = None  # why it refused metrics (set once, by the metric thread)
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._send_metrics, name="mlflow-metrics", daemon=True)
        self._thread.start()

    def log_metrics(self, metrics: Dict[str, float], step: int = 0) -> None:
        """Queue metrics for the run; returns at once."""
        now = int(time.time() * 1000)
        self._queue.put([Metric(key, float(value), now, step) for key, value in metrics.items()])

    def _send_metrics(self) -> None:
        while (batch := self._queue.get()) is not None:
            if self.lost is None and self.refused is None:
                try:
                    self.client.log_batch(self.run_id, metrics=batch)
                    continue
                except Exception as exc:  # noqa: BLE001 - judged by unreachable(); kept locally either way
                    if unreachable(exc):
                        self._lose(exc)
                    else:
                        self._refuse(exc)
            self._keep(batch)

    def _keep(self, batch: List[Metric]) -> None:
        path = self.offline / METRICS_FILE
        new = not path.exists()
        with path.open("a", newline="") as file:
            writer = csv.writer(file)
            if new:
                writer.writerow(["key", "value", "step", "timestamp"])
            writer.writerows([m.key, m.value, m.step, m.timestamp] for m in batch)

    def _lose(self, exc: BaseException) -> None:
        with self._lock:  # the main thread's logging calls and the metric thread both get here
            if self.lost is not None:
                return
            self.offline.mkdir(parents=True, exist_ok=True)
            self.lost = _reason(exc)
        log.error("tracking server %s unreachable for %g s (%s): keeping this run's files in %s",
                  self.cfg.uri, self.cfg.outage_limit_seconds, self.lost, self.offline)

    def _refuse(self, exc: BaseException) -> None:
        with self._lock:
            self.offline.mkdir(parents=True, exist_ok=True)
            self.refused = _reason(exc)
        log.error("tracking server %s refused metrics of run %s (%s): keeping them and every later metric in %s",
                  self.cfg.uri, self.run_id, self.refused, self.offline / METRICS_FILE)

    def _send(self, send: Callable[[], object]) -> bool:
        """Run a main-thread logging call; False (and the server counted as lost) if it could not reach it."""
        if self.lost is None:
            try:
                send()
                return True
            except Exception as exc:
                if not unreachable(exc):
                    raise
                self._lose(exc)
        return False

    def log_artifacts(self, folder: Path) -> None:
        """Log every file of `folder` at the run's root; offline they simply stay where they are."""
        if folder.is_dir() and any(folder.iterdir()):
            self._send(lambda: mlflow.log_artifacts(str(folder)))

    def log_files(self, files: List[Path], tags: Dict[str, str]) -> bool:
        """Log `files` at the run's root and set `tags`; False when the server is lost (the files stay local)."""
        def send():
            for path in files:
                mlflow.log_artifact(str(path))
            mlflow.set_tags(tags)
        return self._send(send)

    def log_model(self, log_model: Callable[[Path | None], None]) -> None:
        """`log_model(None)` logs the run's model to its run; offline `log_model(<folder>/model)` saves it locally."""
        if not self._send(lambda: log_model(None)):
            log_model(self.offline / artifacts.MODEL)

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, kind, error, trace) -> None:
        if kind is None:
            self.close()
        else:  # the job failed or was interrupted: what it measured is still sent, its own error propagates
            self._drain()

    def _drain(self) -> None:
        self._queue.put(None)
        self._thread.join()

    def close(self) -> None:
        """Wait until every queued metric is sent or kept; raise ServerLost when the server was lost or refused
        metrics (they wait in the job folder for `retina_seg.upload`)."""
        self._drain()
        if self.lost is None and self.refused is None:
            return
        (self.offline / RUN_FILE).write_text(json.dumps({"run_id": self.run_id, "tracking_uri": self.cfg.uri},
                                                        indent=1))
        upload = f"`python -m retina_seg.upload folder={self.workdir}`"
        if self.lost is not None:
            raise ServerLost(f"tracking server {self.cfg.uri} unreachable for more than "
                             f"{self.cfg.outage_limit_seconds:g} s: run {self.run_id} kept its metrics and artifacts "
                             f"in {self.workdir}; upload them with {upload}")
        raise ServerLost(f"tracking server {self.cfg.uri} refused metrics of run {self.run_id} ({self.refused}): "
                         f"they are kept in {self.offline / METRICS_FILE}; once that is fixed, upload them with "
                         f"{upload}")


def _reason(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
