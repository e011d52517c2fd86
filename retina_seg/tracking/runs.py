"""MLflow: checking the store, one run per job with an honest end status, params, per-epoch metrics, artifacts.

A run always ends FINISHED, FAILED (an exception) or KILLED (Ctrl-C or SIGTERM, e.g. a cluster time
limit), and whatever the job had written to its staging folder is logged before the run is closed.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, Mapping

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from retina_seg.config import (
    PROJECT_ROOT,
    Config,
    ConfigError,
    InferenceMode,
    Sampling,
    Strategy,
    Task,
    TrackingConfig,
)
from retina_seg.errors import sigterm_as_interrupt
from retina_seg.tracking.outbox import ServerLost

log = logging.getLogger(__name__)


@contextmanager
def _env(**values: str) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` URI (None for other stores)."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


@contextmanager
def schema_lock(uri: str) -> Iterator[None]:
    """Serialise first contact with a SQLite store across processes (`<db>.lock` beside the db), so
    MLflow creates a new store's tables once instead of every starting process racing to."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def check_tracking(cfg: TrackingConfig) -> None:
    """Fail in seconds, with one line, when the tracking store cannot be used (no retries here); a new
    SQLite store gets its tables here, under the schema lock. Called before a job starts any thread: it sets
    MLflow's retry settings in the environment for its one request."""
    database = sqlite_path(cfg.uri)
    if database is not None:
        if not database.parent.is_dir():
            raise ConfigError(f"tracking.uri={cfg.uri!r}: folder '{database.parent}' does not exist")
        if not writable(database.parent) or (database.exists() and not os.access(database, os.R_OK | os.W_OK)):
            raise ConfigError(f"tracking.uri={cfg.uri!r}: folder '{database.parent}' is not writable "
                              "(SQLite writes a journal beside the db): choose a writable folder")
    try:
        with _env(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="10"), schema_lock(cfg.uri):
            MlflowClient(cfg.uri).search_experiments(max_results=1)
    except Exception as exc:
        status = exc.get_http_status_code() if isinstance(exc, MlflowException) else None
        if status in (401, 403):  # a server with accounts: say what to set, without a traceback
            raise ConfigError(_refusal(cfg.uri, status)) from None
        raise ConfigError(f"tracking.uri={cfg.uri!r} is unreachable: {_first_line(exc)}") from exc


def writable(folder: Path) -> bool:
    """Whether a file can be created and deleted in `folder` (tried for real: permission bits do not
    tell root, read-only mounts or full disks apart)."""
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            return True
    except OSError:
        return False


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _refusal(uri: str, status: int) -> str:
    """One line for a server with accounts that refused us (it never repeats the credentials)."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if status == 403:
        return f"tracking.uri={uri!r} refused account '{user}' (403 Forbidden): ask the server's admin for access"
    if user:
        return (f"tracking.uri={uri!r} rejected the credentials of account '{user}' (401 Unauthorized): "
                "check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
    return (f"tracking.uri={uri!r} requires an account (401 Unauthorized): set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD")


def ensure_experiment(cfg: TrackingConfig) -> str:
    """The id of experiment `cfg.experiment` in store `cfg.uri`, created (with the configured artifact
    location) if it does not exist yet."""
    mlflow.set_tracking_uri(cfg.uri)
    experiment = mlflow.get_experiment_by_name(cfg.experiment)
    if experiment is not None:
        return experiment.experiment_id
    location = Path(cfg.artifact_location).resolve().as_uri() if cfg.artifact_location else None
    try:
        return mlflow.create_experiment(cfg.experiment, artifact_location=location)
    except MlflowException:  # a parallel job created it first
        return mlflow.get_experiment_by_name(cfg.experiment).experiment_id


def git_commit() -> str:
    """The project's commit, so a run can be traced to the code that made it."""
    try:
        out = subprocess.run(["git", "-C", str(PROJECT_ROOT), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=10)
    except OSError:
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def flatten(config: Mapping) -> Dict[str, str]:
    """Nested config -> {'trainer.lr': '0.001', ...}, the form MLflow params take."""
    row = pd.json_normalize(dict(config), sep=".").iloc[0]
    return {key: str(value) for key, value in row.items()}


def run_params(config: Config, resolved: Mapping) -> Dict[str, str]:
    """The resolved config as MLflow params, without keys that cannot matter for this run: synthetic-only
    and patch-only data keys, lesion types of a vessel model, the other inference mode's knobs, where
    the run is logged (its own record) and the terminal's verbosity."""
    drop = {"verbose", "resume", "tracking.uri", "tracking.artifact_location", "tracking.run_name",
            "tracking.heartbeat_seconds", "tracking.outage_limit_seconds", "tracking.system_metrics"}
    if config.data.name != "synthetic":
        drop |= {"data.num_images", "data.native_size"}
    if config.data.sampling is not Sampling.patches:
        drop |= {"data.foreground_share", "data.max_side"}
    if config.data.task is not Task.lesions:
        drop.add("data.lesion_types")
    if not config.data.official_train_count:
        drop.add("data.official_train_count")
    if not config.preprocess.clahe:
        drop.add("preprocess.clahe_clip_limit")
    if config.trainer.strategy is not Strategy.mirrored:
        drop.add("trainer.devices")
    drop.add("inference.memory_budget_mb" if config.inference.mode is InferenceMode.tiles else "inference.stride")
    params = {key: value for key, value in flatten(resolved).items() if key not in drop}
    return {**params, "trainer.monitor": config.trainer.monitor}  # the one in force (null: the task's score)


def filter_string(value: str, key: str) -> str:
    """`value` as a string literal in an MLflow search filter. MLflow's filter syntax has no escape inside
    quotes, so it is quoted with the quote it does not contain; a value holding both cannot be searched for."""
    for quote in ("'", '"'):
        if quote not in value:
            return f"{quote}{value}{quote}"
    raise ConfigError(f"{key}={value!r} cannot be searched for: MLflow filters cannot quote a value holding both "
                      "' and \"")


def log_dataset(name: str, root: str, names_by_split: Mapping[str, list]) -> None:
    """Record the data a run used as an MLflow dataset input (the UI's Dataset column): its name, a digest
    of the image list with each image's split, and the split sizes as tags."""
    table = pd.DataFrame([(split, image) for split, images in names_by_split.items() for image in images],
                         columns=["split", "image"])
    with warnings.catch_warnings():  # a local folder "can be interpreted in multiple ways": the same one
        warnings.simplefilter("ignore", UserWarning)
        dataset = mlflow.data.from_pandas(table, source=root, name=name)
    mlflow.log_input(dataset, context="training",
                     tags={f"{split}_images": str(len(images)) for split, images in names_by_split.items()})


def process_started(pid: int) -> str:
    """Start time of process `pid` in clock ticks since boot ('' if it does not exist or is unreadable)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def process_command(pid: int) -> str:
    """The command line of process `pid`, arguments joined by spaces ('' if it does not exist or is unreadable)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def still_running(pid: int, started: str, command: str = "") -> bool:
    """Whether process `pid` is still the one recorded with start time `started` (and command line `command`, if
    given): the kernel hands a dead process's pid to the next process that starts, so a pid alone names a
    stranger once its owner is gone. An empty record, or a /proc that cannot tell, trusts the pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        pass
    for recorded, now in ((started, process_started), (command, process_command)):
        if recorded and now(pid) not in ("", recorded):
            return False
    return True


def owner_tags() -> dict:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": str(pid), "pid_started": process_started(pid),
            "heartbeat": str(int(time.time()))}


@contextmanager
def heartbeat(run_id: str, tracking_uri: str, seconds: float) -> Iterator[None]:
    """Refresh the run's `heartbeat` tag every `seconds` from a daemon thread while the block runs."""
    stop = threading.Event()

    def beat():
        client = MlflowClient(tracking_uri)
        while not stop.wait(seconds):
            try:
                client.set_tag(run_id, "heartbeat", str(int(time.time())))
            except Exception as exc:  # a busy store must not kill the job; the next beat tries again
                log.debug("heartbeat of run %s not recorded: %s", run_id, exc)

    thread = threading.Thread(target=beat, name="mlflow-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()  # a beat in flight ends within the outage limit; no thread outlives its run


@contextmanager
def tracked_run(cfg: TrackingConfig, staging: Path, tags: Dict[str, str], experiment_id: str | None = None,
                run_name: str | None = None, nested: bool = False,
                run_id: str | None = None) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run around a job (in `cfg.experiment` unless `experiment_id` is given; `nested`: a child
    of the active run; `run_id` reopens an existing run), owned by this process (host, pid, heartbeat
    tags), with MLflow's system metrics unless `cfg.system_metrics` is off; on failure or interruption it keeps
    the staged files and records why (tag `failure_reason`)."""
    mlflow.set_tracking_uri(cfg.uri)
    staging.mkdir(parents=True, exist_ok=True)
    tags = {**tags, **owner_tags()}
    if run_id:
        run = mlflow.start_run(run_id=run_id, log_system_metrics=cfg.system_metrics)
        mlflow.set_tags(tags)
    else:
        run = mlflow.start_run(experiment_id=experiment_id or ensure_experiment(cfg), run_name=cfg.run_name or run_name,
                               tags=tags, nested=nested, log_system_metrics=cfg.system_metrics)
    where = (f"run {run.info.run_id} ({run.info.run_name}) in experiment "
             f"'{mlflow.get_experiment(run.info.experiment_id).name}'")
    log.info("MLflow %s %s; browse: %s", where, "resumed" if run_id else "started", browse_hint(cfg.uri, run))
    previous = sigterm_as_interrupt()
    try:
        with heartbeat(run.info.run_id, cfg.uri, cfg.heartbeat_seconds):
            yield run
    except ServerLost:
        _forget(run)
        raise
    except KeyboardInterrupt as exc:
        _close(run, staging, "KILLED", f"interrupted by signal {getattr(exc, 'signum', signal.SIGINT)}")
        raise
    except BaseException as exc:
        _close(run, staging, "FAILED", str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        raise
    else:
        mlflow.end_run("FINISHED")
        log.info("MLflow %s FINISHED; browse: %s", where, browse_hint(cfg.uri, run))
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def browse_hint(uri: str, run: mlflow.ActiveRun) -> str:
    """Where a user sees the run: its page on a tracking server, or the `mlflow ui` command for a local store."""
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    return f"mlflow ui --backend-store-uri {uri}"


def _close(run: mlflow.ActiveRun, staging: Path, status: str, reason: str) -> None:
    try:
        mlflow.set_tag("failure_reason", reason[:5000])
        log_staged(staging)
    except Exception as exc:  # the status matters more than the files; say what was lost
        log.error("could not log the artifacts of run %s: %s", run.info.run_id, exc)
    finally:
        mlflow.end_run(status)
        log.warning("run %s marked %s", run.info.run_id, status)


def _forget(run: mlflow.ActiveRun) -> None:
    """Leave a run whose server is lost or refused its metrics; `retina_seg.upload` finishes it. Ending it tries
    the server once more (within the outage limit: the environment is not changed here, where a parent run's
    heartbeat may still be running)."""
    try:
        mlflow.end_run("FAILED")  # reaches the server only if it is back; the upload marks it FINISHED
    except Exception:  # noqa: BLE001 - the server is gone; the files are local
        log.warning("run %s left unfinished on the server until its files are uploaded", run.info.run_id)


def log_staged(staging: Path) -> None:
    """Log every file the job wrote to its staging folder at the run's artifact root."""
    if staging.is_dir() and any(staging.iterdir()):
        mlflow.log_artifacts(str(staging))
