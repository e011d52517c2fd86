"""Scale-out launchers for real: a 2-job multirun through submitit's local executor, and through the
Ray launcher on a local Ray instance the test starts (`ray start --head`), both into one store."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import free_port, runs_in
from tests.test_sweeps import SWEEP_TINY, multirun

pytestmark = pytest.mark.slow  # end-to-end: left out of make test-fast


def assert_two_finished_jobs(tmp_path: Path, done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 0, done.stderr[-3000:]
    runs = runs_in(tmp_path)
    assert sorted(r.data.params["seed"] for r in runs) == ["1", "2"]
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    assert sorted(r.data.tags["sweep_job"] for r in runs) == ["0", "1"]
    assert all("test_f1" in r.data.metrics for r in runs)


def test_submitit_local_executor_runs_a_two_job_sweep(tmp_path):
    done = multirun(tmp_path, *SWEEP_TINY, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=30",
                    "hydra.launcher.cpus_per_task=1", "seed=1,2")
    assert_two_finished_jobs(tmp_path, done)


@pytest.fixture
def ray_head():
    """A real local Ray instance (`ray start --head` on a free port, its own short temp folder: Ray's
    socket paths must stay under 108 characters), stopped afterwards."""
    ray = Path(sys.executable).with_name("ray")
    port = free_port()
    folder = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    started = subprocess.run([str(ray), "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
                              "--num-cpus=2", "--include-dashboard=false", f"--temp-dir={folder}"],
                             capture_output=True, text=True, timeout=300, env=env)
    try:
        assert started.returncode == 0, started.stderr[-3000:]
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(ray), "stop", "--force"], capture_output=True, timeout=120, env=env)
        shutil.rmtree(folder, ignore_errors=True)


def test_ray_launcher_runs_a_two_job_sweep_on_a_local_ray_instance(tmp_path, ray_head):
    done = multirun(tmp_path, *SWEEP_TINY, "hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address={ray_head}",
                    "hydra.launcher.ray.remote.num_cpus=1", "hydra.launcher.ray.remote.num_gpus=0", "seed=1,2")
    assert_two_finished_jobs(tmp_path, done)
