"""The tracking store check: a new SQLite store's tables are created once, under a lock, by many processes."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from retina_seg.config import PROJECT_ROOT, ConfigError, TrackingConfig
from retina_seg.tracking.runs import check_tracking

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
