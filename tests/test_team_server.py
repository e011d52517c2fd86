"""A team's tracking server for real: PostgreSQL, `mlflow server` with basic-auth and proxied artifacts.

One PostgreSQL and one tracking server (with accounts) serve the whole module; it skips with the reason
when PostgreSQL cannot start here.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from retina_seg.config import PROJECT_ROOT, ServerConfig
from retina_seg.team_server import ADMIN, ServerError, TeamServer
from retina_seg.tracking.runs import process_started
from tests.conftest import TINY, free_port, unavailable

pytestmark = pytest.mark.slow  # end-to-end: left out of make test-fast

EXPERIMENT = "team"
USER = "alice"


@pytest.fixture(scope="module")
def team():
    """PostgreSQL and an MLflow server with accounts, in a folder the `postgres` user can reach (pytest's
    tmp folders are private to root), plus the account `alice` created by the admin."""
    folder = Path(tempfile.mkdtemp(prefix="retina-seg-team-"))
    # one worker: uvicorn then runs no supervisor that restarts workers slow to answer its pings on a busy machine
    server = TeamServer(ServerConfig(folder=str(folder), port=free_port(), db_port=free_port(), auth=True, workers=1))
    try:
        try:
            server.start_database()
        except (ServerError, OSError) as exc:
            unavailable(f"PostgreSQL cannot start here: {exc}")
        server.start_tracking()
        password = secrets.token_urlsafe(16)
        admin = {"MLFLOW_TRACKING_USERNAME": ADMIN, "MLFLOW_TRACKING_PASSWORD": (folder / "admin_password").read_text()}
        with pytest.MonkeyPatch.context() as patch:
            for key, value in admin.items():
                patch.setenv(key, value)
            from mlflow.server import get_app_client

            get_app_client("basic-auth", tracking_uri=server.uri).create_user(USER, password)
        yield server, {"MLFLOW_TRACKING_USERNAME": USER, "MLFLOW_TRACKING_PASSWORD": password}
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


def client_for(server: TeamServer, credentials: dict, monkeypatch) -> MlflowClient:
    for key, value in credentials.items():
        monkeypatch.setenv(key, value)
    return MlflowClient(server.uri)


def start(module: str, args: list[str], output: Path, credentials: dict | None) -> subprocess.Popen:
    """A user's command in its own process (with `credentials` as its only ones), all output to `output`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")} | (credentials or {})
    out = open(output, "w")
    return subprocess.Popen([sys.executable, "-m", module, *args], stdout=out, stderr=subprocess.STDOUT, text=True,
                            cwd=PROJECT_ROOT, env={**env, "HYDRA_FULL_ERROR": "0"})


def server_args(server: TeamServer, tmp: Path) -> list[str]:
    return [*TINY, "tracking=server", f"tracking.uri={server.uri}", f"tracking.experiment={EXPERIMENT}",
            f"data.root={tmp}/cache"]


def test_a_parallel_sweep_logs_to_postgres_and_compare_and_promote_read_it(team, tmp_path, monkeypatch):
    """Two jobs at once (local_parallel) against the PostgreSQL-backed server, then the apps that read them."""
    server, credentials = team
    sweep = start("retina_seg.run", ["-m", *server_args(server, tmp_path / "sweep"), "seed=3,4",
                                     "hydra/launcher=local_parallel", "hydra.launcher.n_jobs=2",
                                     f"hydra.sweep.dir={tmp_path}/sweep"], tmp_path / "sweep.out", credentials)
    assert sweep.wait(timeout=600) == 0, (tmp_path / "sweep.out").read_text()[-3000:]

    client = client_for(server, credentials, monkeypatch)
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id])
    assert sorted(r.data.params["seed"] for r in runs) == ["3", "4"]
    for run in runs:
        assert run.info.status == "FINISHED" and len(client.get_metric_history(run.info.run_id, "loss")) == 1
        weights = Path(client.download_artifacts(run.info.run_id, "resnet18_Retinal.h5", str(tmp_path / "dl")))
        assert weights.stat().st_size > 1_000_000  # downloaded through the server's artifact proxy
    assert server.folder.joinpath("artifacts").is_dir()

    done = subprocess.run([sys.executable, "-m", "retina_seg.compare", "tracking=server",
                           f"tracking.uri={server.uri}", f"tracking.experiment={EXPERIMENT}",
                           f"hydra.run.dir={tmp_path}/compare"], capture_output=True, text=True, timeout=300,
                          cwd=PROJECT_ROOT, env={**os.environ, **credentials})
    assert done.returncode == 0, done.stderr[-2000:]
    table = (tmp_path / "compare" / "artifacts" / "comparison.csv").read_text()
    assert len(table.strip().splitlines()) == 3  # header + the sweep's two jobs
    done = subprocess.run([sys.executable, "-m", "retina_seg.promote", "tracking=server", f"tracking.uri={server.uri}",
                           f"tracking.experiment={EXPERIMENT}", "sweep=sweep", f"hydra.run.dir={tmp_path}/promote"],
                          capture_output=True, text=True, timeout=300, cwd=PROJECT_ROOT,
                          env={**os.environ, **credentials})
    assert done.returncode == 0, done.stderr[-2000:]
    champion = client.get_model_version_by_alias("retina-seg", "champion")  # the registry, in PostgreSQL
    assert champion.run_id in {r.info.run_id for r in runs if r.data.tags.get("sweep_id") == "sweep"}

    secret = credentials["MLFLOW_TRACKING_PASSWORD"]
    for run in runs:
        assert secret not in str(run.data.params) + str(run.data.tags)
        config = Path(client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path / run.info.run_id)))
        assert secret not in config.read_text()
    logs = [p.read_text() for p in tmp_path.rglob("*") if p.suffix in (".out", ".log", ".yaml") and p.is_file()]
    assert logs and not any(secret in text for text in logs)


def test_without_an_account_the_apps_say_so_in_one_line(team, tmp_path):
    server, _ = team
    for module, args in (("retina_seg.run", server_args(server, tmp_path)),
                         ("retina_seg.compare", ["tracking=server", f"tracking.uri={server.uri}"])):
        job = start(module, [*args, f"hydra.run.dir={tmp_path}/{module}"], tmp_path / f"{module}.out", None)
        assert job.wait(timeout=300) == 2
        lines = tmp_path.joinpath(f"{module}.out").read_text().strip().splitlines()
        assert lines[-1] == (f"error: tracking.uri='{server.uri}' requires an account (401 Unauthorized): "
                             "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
        assert not any("Traceback" in line for line in lines)


@pytest.fixture
def stranger():
    """A live process group of the test's own that has nothing to do with any server: what a tracking server's
    pid names once the server is gone and the kernel has handed its pid on."""
    process = subprocess.Popen(["sleep", "600"], start_new_session=True)
    yield process
    process.kill()
    process.wait()


@pytest.mark.parametrize("record", ["bare pid", "another start time", "another command"])
def test_a_pid_file_naming_another_process_is_tidied_and_that_process_never_signalled(record, stranger, tmp_path,
                                                                                     caplog):
    server = TeamServer(ServerConfig(folder=str(tmp_path), port=free_port(), db_port=free_port()))
    identity = {"pid": stranger.pid, "started": process_started(stranger.pid), "command": "sleep 600"}
    text = {"bare pid": str(stranger.pid),  # what the file held before it recorded identities
            "another start time": json.dumps({**identity, "started": str(int(identity["started"]) - 1)}),
            "another command": json.dumps({**identity, "command": f"{sys.executable} -m mlflow server"})}[record]
    server.pid_file.write_text(text)
    assert server.tracking_pid() is None  # so `start` does not refuse to start
    assert not server.pid_file.exists()
    assert f"removed the stale {server.pid_file}" in caplog.text
    server.pid_file.write_text(text)
    server.stop_tracking()  # neither crashes nor signals the stranger's group
    assert stranger.poll() is None and not server.pid_file.exists()


def test_the_process_the_pid_file_names_is_stopped_with_its_group(stranger, tmp_path):
    """The identity check lets the right process through (with a real server: the restart test below)."""
    server = TeamServer(ServerConfig(folder=str(tmp_path), port=free_port(), db_port=free_port()))
    server.pid_file.write_text(json.dumps({"pid": stranger.pid, "started": process_started(stranger.pid),
                                           "command": "sleep 600"}))
    assert server.tracking_pid() == stranger.pid
    server.stop_tracking()  # it reaps the process too, being its parent here
    with pytest.raises(ProcessLookupError):
        os.killpg(stranger.pid, 0)
    assert not server.pid_file.exists()


def test_credentials_in_the_uri_are_refused_without_echoing_them(tmp_path):
    job = start("retina_seg.run", [*TINY, "tracking=server", "tracking.uri=http://bob:hunter2@127.0.0.1:9",
                                   f"hydra.run.dir={tmp_path}/h"], tmp_path / "uri.out", None)
    assert job.wait(timeout=300) == 2
    out = tmp_path.joinpath("uri.out").read_text()
    assert "tracking.uri='<redacted>' is invalid: expected a URI without credentials" in out
    assert "hunter2" not in out


def wait_for_first_epochs(client: MlflowClient, jobs: list, count: int) -> None:
    """Until `count` runs of the restart experiment have logged their first epoch (the jobs still alive)."""
    deadline = time.time() + 600
    while time.time() < deadline:
        assert all(job.poll() is None for job in jobs), "a job ended before the restart"
        experiment = client.get_experiment_by_name("restart")
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        if len(runs) == count and all(client.get_metric_history(r.info.run_id, "loss") for r in runs):
            return
        time.sleep(1)
    raise AssertionError("the runs did not log a first epoch in 10 minutes")


def assert_complete(client: MlflowClient, run, tmp: Path) -> None:
    """FINISHED, one metric value per trained epoch (the history CSV is the job's own count), all artifacts."""
    assert client.get_run(run.info.run_id).info.status == "FINISHED"
    history = Path(client.download_artifacts(run.info.run_id, "resnet18_Retinal.csv", str(tmp)))
    epochs = len(history.read_text().strip().splitlines()) - 1
    assert epochs >= 3
    for key in ("loss", "val_f1-score", "learning_rate"):
        assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == list(range(epochs))
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"resnet18_Retinal.json", "resnet18_Retinal.h5", "config.yaml", "curves.png", "metrics"} <= names
    assert "test_f1" in client.get_run(run.info.run_id).data.metrics


def test_a_run_survives_a_server_restart_and_a_run_past_its_outage_limit_uploads_later(team, tmp_path,
                                                                                      monkeypatch):
    server, credentials = team
    longer = ["trainer.epochs=10", "trainer.early_stopping_patience=100", "trainer.reduce_lr_patience=100",
              "tracking.experiment=restart"]
    survivor = start("retina_seg.run", [*server_args(server, tmp_path / "a"), *longer, "tracking.run_name=survivor",
                                        f"hydra.run.dir={tmp_path}/a"], tmp_path / "a.out", credentials)
    lost = start("retina_seg.run", [*server_args(server, tmp_path / "b"), *longer, "tracking.run_name=lost",
                                    "tracking.outage_limit_seconds=5", f"hydra.run.dir={tmp_path}/b"],
                 tmp_path / "b.out", credentials)
    client = client_for(server, credentials, monkeypatch)
    wait_for_first_epochs(client, [survivor, lost], 2)
    server.stop_tracking()
    time.sleep(12)  # over twice the lost run's 5 s outage limit
    server.start_tracking()

    assert survivor.wait(timeout=900) == 0, (tmp_path / "a.out").read_text()[-3000:]
    assert lost.wait(timeout=900) == 3, (tmp_path / "b.out").read_text()[-3000:]
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("restart").experiment_id])}
    assert_complete(client, runs["survivor"], tmp_path / "dl-a")

    last = (tmp_path / "b.out").read_text().strip().splitlines()[-1]
    assert last == (f"error: tracking server {server.uri} unreachable for more than 5 s: run "
                    f"{runs['lost'].info.run_id} kept its metrics and artifacts in {tmp_path}/b; upload them with "
                    f"`python -m retina_seg.upload folder={tmp_path}/b`")
    assert (tmp_path / "b" / "artifacts" / "resnet18_Retinal.h5").is_file()
    assert (tmp_path / "b" / "offline" / "model" / "MLmodel").is_file()
    upload = start("retina_seg.upload", [f"folder={tmp_path}/b"], tmp_path / "upload.out", credentials)
    assert upload.wait(timeout=300) == 0, (tmp_path / "upload.out").read_text()[-3000:]
    assert_complete(client, runs["lost"], tmp_path / "dl-b")
    assert "MLmodel" in {a.path.split("/")[-1] for a in client.list_artifacts(runs["lost"].info.run_id, "model")}
    again = start("retina_seg.upload", [f"folder={tmp_path}/b"], tmp_path / "again.out", credentials)
    assert again.wait(timeout=300) == 2 and "was uploaded already" in (tmp_path / "again.out").read_text()
