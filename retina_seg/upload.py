"""`python -m retina_seg.upload folder=<job folder>`: finish a run whose tracking server was lost mid-job.

A job whose server stayed unreachable past `tracking.outage_limit_seconds` keeps its artifacts in
`<folder>/artifacts` and its unsent metrics, model and run id in `<folder>/offline`, and its last line
names this command. The upload sends them to that same run, marks it FINISHED and leaves an
`offline/uploaded` note, so a second upload cannot duplicate metrics.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import hydra
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from retina_seg.cli import run_app, user_errors
from retina_seg.config import ConfigError, TrackingConfig, UploadConfig, validate
from retina_seg.tracking import artifacts
from retina_seg.tracking.outbox import METRICS_FILE, RUN_FILE
from retina_seg.tracking.runs import check_tracking

DONE_FILE = "uploaded"
BATCH = 1000  # metrics per request (MLflow's log_batch limit)


def upload(config: UploadConfig) -> str:
    """Send a lost job's files to its run; returns what was done, in one line."""
    offline = Path(config.folder) / "offline"
    if not (offline / RUN_FILE).is_file():
        raise ConfigError(f"folder='{config.folder}' has no offline/{RUN_FILE}: expected the job folder named by a "
                          "run that lost its tracking server")
    if (offline / DONE_FILE).exists():
        raise ConfigError(f"folder='{config.folder}' was uploaded already ({(offline / DONE_FILE).read_text()})")
    record = json.loads((offline / RUN_FILE).read_text())
    uri, run_id = config.tracking_uri or record["tracking_uri"], record["run_id"]
    check_tracking(TrackingConfig(uri=uri))
    client = MlflowClient(uri)
    metrics = []
    if (offline / METRICS_FILE).exists():
        with (offline / METRICS_FILE).open() as file:
            metrics = [Metric(row["key"], float(row["value"]), int(row["timestamp"]), int(row["step"]))
                       for row in csv.DictReader(file)]
    for start in range(0, len(metrics), BATCH):
        client.log_batch(run_id, metrics=metrics[start:start + BATCH])
    staged = artifacts.staging(Path(config.folder))
    files = [p for p in staged.rglob("*") if p.is_file()] if staged.is_dir() else []
    if files:
        client.log_artifacts(run_id, str(staged))
    if (offline / artifacts.MODEL).is_dir():
        client.log_artifacts(run_id, str(offline / artifacts.MODEL), artifacts.MODEL)
    client.set_terminated(run_id, "FINISHED")
    done = f"run {run_id} at {uri}: {len(metrics)} metric values, {len(files)} files" + \
        (" and the model" if (offline / artifacts.MODEL).is_dir() else "") + " uploaded; run FINISHED"
    (offline / DONE_FILE).write_text(done)
    return done


@hydra.main(config_path="conf/apps/upload", config_name="upload", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    print(upload(validate(cfg)))


if __name__ == "__main__":
    run_app(main)
