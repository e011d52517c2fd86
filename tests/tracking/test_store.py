"""The tracking store: a new SQLite store's tables are created once, under a lock, by many processes; what a
store refuses is kept and uploaded later; no logging thread outlives its run."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from retina_seg.config import PROJECT_ROOT, ConfigError, TrackingConfig, UploadConfig
from retina_seg.tracking.outbox import Outbox, ServerLost
from retina_seg.tracking.runs import check_tracking, heartbeat
from retina_seg.upload import upload

FIRST_CONTACT = """
import sys
from retina_seg.config import TrackingConfig
from retina_seg.tracking.runs import check_tracking
check_tracking(TrackingConfig(uri=sys.argv[1]))
from mlflow.tracking import MlflowClient
MlflowClient(sys.argv[1]).create_experiment(f"writer{sys.argv[2]}")
"""


def test_four_processes_create_a_new_store_at_once(tmp_path):
    """MLflow's own schema creation races ('table already exists'); under the lock all four succeed."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    procs = [subprocess.Popen([sys.executable, "-c", FIRST_CONTACT, uri, str(n)], cwd=PROJECT_ROOT,
                              stderr=subprocess.PIPE, text=True) for n in range(4)]
    for proc in procs:
        _, stderr = proc.communicate(timeout=900)
        assert proc.returncode == 0, stderr[-3000:]
    names = {e.name for e in MlflowClient(uri).search_experiments()}
    assert {f"writer{n}" for n in range(4)} <= names


def test_a_read_only_store_folder_fails_at_once():
    """It used to take 107 s of retries; /proc is read-only even for root."""
    with pytest.raises(ConfigError, match=r"tracking.uri='sqlite:////proc/mlflow.db': folder '/proc' is not writable"):
        check_tracking(TrackingConfig(uri="sqlite:////proc/mlflow.db"))


@pytest.fixture
def store(tmp_path):
    """A real SQLite store with one RUNNING run; (config, client, run id)."""
    config = TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="test")
    client = MlflowClient(config.uri)
    run_id = client.create_run(client.create_experiment("test", str(tmp_path / "artifacts"))).info.run_id
    return config, client, run_id


def test_metrics_the_store_refuses_are_reported_once_kept_and_uploaded_later(store, tmp_path, caplog):
    """After one refused batch every later batch used to be dropped silently and the refusal never said."""
    config, client, run_id = store
    before = dict(os.environ)
    outbox = Outbox(config, run_id, tmp_path / "job")
    assert dict(os.environ) == before  # MLflow's retry settings are set once per job, before its threads
    outbox.log_metrics({"loss": 0.9}, step=0)
    deadline = time.time() + 60
    while not client.get_metric_history(run_id, "loss"):  # the metric thread sent the first epoch
        assert time.time() < deadline
        time.sleep(0.1)
    client.delete_run(run_id)  # the store now refuses the run's metrics: a refusal, not an outage
    for step in (1, 2, 3):
        outbox.log_metrics({"loss": 1 - step / 10, "val_loss": 1.0}, step=step)
    with pytest.raises(ServerLost, match=rf"^tracking server {config.uri} refused metrics of run {run_id} \(.*deleted.*"
                                         rf"\): they are kept in {tmp_path}/job/offline/metrics.csv; once that is "
                                         rf"fixed, upload them with `python -m retina_seg.upload "
                                         rf"folder={tmp_path}/job`$"):
        outbox.close()
    kept = pd.read_csv(tmp_path / "job" / "offline" / "metrics.csv")
    assert sorted(zip(kept["key"], kept["step"], strict=True)) == [(key, step) for key in ("loss", "val_loss")
                                                                   for step in (1, 2, 3)]
    refusals = [r for r in caplog.records if "refused metrics" in r.getMessage()]
    assert len(refusals) == 1 and "deleted" in refusals[0].getMessage()  # once, with its reason

    client.restore_run(run_id)  # the cause fixed: nothing was lost
    assert upload(UploadConfig(folder=str(tmp_path / "job"))).startswith(f"run {run_id} at {config.uri}: 6 metric")
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [0, 1, 2, 3]
    assert client.get_run(run_id).info.status == "FINISHED"


def test_the_heartbeat_thread_ends_with_its_run(store):
    config, _, run_id = store
    with heartbeat(run_id, config.uri, seconds=0.01):
        time.sleep(0.2)  # beats while the block runs
    assert not [t for t in threading.enumerate() if t.name == "mlflow-heartbeat"]
