"""Surviving kill -9, OOM kills and power loss: who owns a RUNNING run, checkpoints logged while
training, tidying up runs whose process is gone, and the last checkpoint of a run to resume it.

Every run carries tags `host`, `pid` and `pid_started` (the process start time, so a reused pid is not
mistaken for the owner) and a `heartbeat` tag (unix seconds) refreshed by a background thread.
On the owner's host a RUNNING run whose process is gone is dead; from another host, a run whose
heartbeat is older than `stale_minutes` is.
"""

from __future__ import annotations

import logging
import socket
import tempfile
import time
from pathlib import Path
from typing import List

import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from retina_seg.config import Config, ConfigError, read_run_config, validate
from retina_seg.tracking import artifacts
from retina_seg.tracking.runs import check_tracking, still_running

log = logging.getLogger(__name__)
RESUMABLE = ("KILLED", "FAILED")


def reconcile(client: MlflowClient, experiment_ids: List[str], stale_minutes: float | None) -> List[str]:
    """Mark KILLED every RUNNING run whose process is gone: on this host by pid; on other hosts by a
    heartbeat older than `stale_minutes` (None: leave other hosts' runs alone). Returns one line per change."""
    host, now, changes = socket.gethostname(), time.time(), []
    for run in client.search_runs(experiment_ids, "attributes.status = 'RUNNING'", max_results=10000):
        tags = run.data.tags
        if tags.get("host") == host and "pid" in tags:
            if still_running(int(tags["pid"]), tags.get("pid_started", "")):
                continue
            reason = f"process {tags['pid']} on {host} is gone"
        elif stale_minutes is not None:
            beat = float(tags.get("heartbeat", run.info.start_time / 1000))
            if now - beat < 60 * stale_minutes:
                continue
            reason = f"no heartbeat from host {tags.get('host', 'unknown')} for {(now - beat) / 60:.0f} minutes"
        else:
            continue
        client.set_tag(run.info.run_id, "failure_reason", reason)
        client.set_terminated(run.info.run_id, "KILLED")
        changes.append(f"run {run.info.run_id} ({run.info.run_name}) RUNNING -> KILLED: {reason}")
    return changes


def resumed_config(cfg: DictConfig, overrides: List[str]) -> DictConfig:
    """The config run `cfg.resume` was trained with, with this command line's `key=value` overrides on top
    (e.g. trainer.epochs=40) and its tracking settings. Config groups cannot change: the weights would not fit."""
    run_id, tracking = cfg.resume, validate(cfg).tracking
    check_tracking(tracking)
    client = MlflowClient(tracking.uri)
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise ConfigError(f"resume={run_id}: no such run in tracking.uri (check tracking.uri / tracking=...)") from exc
    if run.info.status not in RESUMABLE:
        raise ConfigError(f"resume={run_id}: the run is {run.info.status}; only KILLED or FAILED runs can be resumed "
                          "(a RUNNING run whose process died: python -m retina_seg.reconcile)")
    try:
        with tempfile.TemporaryDirectory() as folder:
            trained = read_run_config(Path(client.download_artifacts(run_id, artifacts.CONFIG, folder)))
        changes = [o.lstrip("+") for o in overrides if not o.startswith(("resume=", "hydra.", "~"))]
        groups = [o for o in changes if isinstance(trained.get(o.split("=", 1)[0]), DictConfig)]
        if groups:
            raise ConfigError(f"{groups[0]} selects a config group; a resumed run keeps its model and data, only "
                              "key=value overrides apply (e.g. trainer.epochs=40)")
        merged = OmegaConf.merge(OmegaConf.structured(Config), trained, OmegaConf.from_dotlist(changes))
        merged.tracking, merged.resume = cfg.tracking, run_id
        validate(merged)  # the stored config is checked before anything is built from it
    except ConfigError as exc:
        raise ConfigError(f"resume={run_id}: {exc}") from None
    return merged


def fetch_checkpoint(client: MlflowClient, run_id: str, backbone: str, staging: Path) -> pd.DataFrame:
    """Download the last checkpoint of a run (`<BACKBONE>_Retinal.h5` and `.csv`) into `staging`; returns the
    history of its epochs."""
    names = {a.path for a in client.list_artifacts(run_id)}
    checkpoint = (artifacts.weights(backbone), artifacts.history(backbone))
    missing = [n for n in checkpoint if n not in names]
    if missing:
        raise ConfigError(f"resume={run_id}: the run has no checkpoint ({', '.join(missing)} not "
                          "logged): it stopped before its first epoch ended; start a new run instead")
    staging.mkdir(parents=True, exist_ok=True)
    for name in checkpoint:
        client.download_artifacts(run_id, name, str(staging))
    return pd.read_csv(staging / artifacts.history(backbone))
