"""Shared helpers: compose the real config tree against a throw-away MLflow store and data cache."""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from retina_seg.config import CONF_DIR, PROJECT_ROOT

# `make test` runs two pytest-xdist workers on the 2 cores: one TensorFlow thread pool of one thread per
# process (inherited by every process a test starts), instead of two workers' pools fighting over both cores
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"  # real datasets for tests that skip without them

# Tiny settings every end-to-end test starts from: 64 px images, a handful of them, one short epoch.
TINY = ["trainer=fast", "image_size=64", "data.num_images=8", "backbone=resnet18", "augmentation=none"]


def isolate(tmp_path: Path, migrated: bool = True) -> list[str]:
    """Overrides that point the store, the artifacts and the synthetic cache into tmp_path. `migrated`: the store
    starts as a copy of an empty one MLflow created in this test process (see `migrated_store`); False leaves
    its creation to the command under test."""
    if migrated:
        migrated_store(tmp_path / "mlflow.db")
    return [f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"tracking.artifact_location={tmp_path}/artifacts",
            f"data.root={tmp_path}/cache", "tracking.experiment=test", f"cache_dir={tmp_path}/arrays"]


@functools.cache
def _template_store() -> Path:
    """An empty store MLflow created and migrated in this test process, removed when the process ends."""
    template = Path(tempfile.mkdtemp(prefix="retina-seg-store-")) / "mlflow.db"
    MlflowClient(f"sqlite:///{template}").search_experiments(max_results=1)
    atexit.register(shutil.rmtree, template.parent, ignore_errors=True)
    return template


def migrated_store(database: Path) -> None:
    """An empty MLflow SQLite store at `database` (unless one is there), copied from one MLflow created and
    migrated once per test process: its schema migrations cost 4 s per new store, which a hundred tests would
    pay for nothing. How a new store is created, also by processes at once, is tested without it
    (tracking/test_store.py, the parallel sweep in test_sweeps.py)."""
    database.parent.mkdir(parents=True, exist_ok=True)
    if not database.exists():
        shutil.copyfile(_template_store(), database)


def compose_config(overrides: list[str], name: str = "config", with_hydra: bool = False):
    """The real config tree composed like the command line does (`name`: config, evaluate or predict);
    `with_hydra`: with Hydra's own node (`hydra.runtime.choices`, the sweeper's params)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=overrides, return_hydra_config=with_hydra)


def run_cli(module: str, overrides: list[str], tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run an entry point the way a user does, in its own process, with Hydra's outputs in tmp_path."""
    args = [sys.executable, "-m", module, *overrides, f"hydra.run.dir={tmp_path}/hydra"]
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=PROJECT_ROOT,
                          env={**os.environ, "HYDRA_FULL_ERROR": "0"})


def runs_in(tmp_path: Path) -> list:
    """Every run in the test store (empty when the store was never created)."""
    if not (tmp_path / "mlflow.db").exists():
        return []
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments) if experiments else []


def wait_until_up(proc: subprocess.Popen, url: str, log_path: Path, seconds: float,
                  context: ssl.SSLContext | None = None) -> None:
    """Poll a server's health `url` until it answers 200; fail with the end of its log if it dies or is late
    (`context`: the TLS settings of an https URL)."""
    deadline = time.time() + seconds
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2, context=context) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"server at {url} did not start: {log_path.read_text()[-3000:]}")
        time.sleep(0.5)


def unavailable(reason: str) -> None:
    """A system component a test needs is missing: skip, saying why; under CI (`CI` set, as `.ci/run` does),
    where `make test` installs every component, fail instead, so a broken setup is never a green skip."""
    if os.environ.get("CI"):
        pytest.fail(f"CI installs this (make test): {reason}")
    pytest.skip(reason)


def default_sigint() -> None:
    """A child's `preexec_fn`: SIGINT at its default, as in a terminal. A suite started in the background
    (`make test &`, pytest-xdist's workers) passes SIGINT down as ignored, and Python then never turns it
    into KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stop_group(proc: subprocess.Popen) -> None:
    """Stop a server started with start_new_session=True and every worker it spawned (one that already
    ended, e.g. refusing its options, has no group left to signal)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        proc.wait()
        return
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def system_program(name: str, package: str) -> str:
    """The path of a program from a Debian package (also looked for in /usr/sbin); when it is missing the test
    skips saying how to install it, or fails under CI, which installs it through `make test`."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        unavailable(f"{name} is missing: apt-get install {package} (make services)")
    return path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on, for a server a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 (SQLite backend, proxied artifact store, a free port),
    in its own process group so every worker it spawns is stopped with it."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    args = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root}/server.db",
            "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
            "--workers", "1"]
    log = open(root / "server.log", "w")
    server = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(server, f"{uri}/health", root / "server.log", seconds=120)
        yield uri
    finally:
        stop_group(server)
        log.close()
