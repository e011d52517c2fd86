"""Runs under real faults: many processes on a new store, unusable folders, signals, exit codes.

Each test reproduces the fault for real (real processes, real signals, real files); waits are on
log lines, never fixed sleeps, with minutes of slack for a busy machine.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from mlflow.tracking import MlflowClient

from retina_seg.config import PROJECT_ROOT, ConfigError, validate
from retina_seg.run import run_job
from retina_seg.tracking.preflight import preflight
from retina_seg.training.fit import TrainingDiverged
from tests.conftest import TINY, compose_config, default_sigint, isolate, run_cli, runs_in

pytestmark = pytest.mark.slow  # end-to-end: left out of make test-fast

READ_ONLY = Path("/proc/retina-seg")  # a real read-only place, even for root (permission bits do not stop root)


def start(tmp_path: Path, name: str, *overrides: str) -> subprocess.Popen:
    """`python -m retina_seg.run` in the background, SIGINT at its default; its Hydra log is
    `<tmp_path>/<name>/run.log`."""
    args = [sys.executable, "-m", "retina_seg.run", *TINY, *isolate(tmp_path), *overrides,
            f"hydra.run.dir={tmp_path}/{name}"]
    return subprocess.Popen(args, cwd=PROJECT_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONUNBUFFERED": "1"},
                            preexec_fn=default_sigint)


def wait_for_line(proc: subprocess.Popen, log: Path, text: str, minutes: float = 10) -> None:
    """Block until `text` appears in the job's log (the process must stay alive meanwhile)."""
    deadline = time.time() + 60 * minutes
    while not (log.exists() and text in log.read_text()):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline, f"no '{text}' in {log} after {minutes} minutes"
        time.sleep(0.5)


def artifact_names(tmp_path: Path, run_id: str) -> set[str]:
    return {a.path for a in MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").list_artifacts(run_id)}


PREFLIGHT_CASES = {
    "store folder read-only": (["tracking.uri=sqlite:////proc/mlflow.db"],
                               "tracking.uri='sqlite:////proc/mlflow.db': folder '/proc' is not writable"),
    "artifact location read-only": ([f"tracking.artifact_location={READ_ONLY}/artifacts"],
                                    f"artifact location 'file://{READ_ONLY}/artifacts' of experiment 'test' is not "
                                    "writable"),
    "data cache read-only": ([f"data.root={READ_ONLY}/cache"],
                             f"data.root '{READ_ONLY}/cache': '/proc' is not a writable folder"),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A folder whose SQLite store already has its tables (creating them takes seconds), shared by the
    in-process pre-flight tests, each in its own experiment."""
    folder = tmp_path_factory.mktemp("store")
    MlflowClient(f"sqlite:///{folder}/mlflow.db").search_experiments()
    return folder


@pytest.mark.parametrize("case", PREFLIGHT_CASES)
def test_preflight_names_the_unusable_thing(case, store, tmp_path):
    overrides, expected = PREFLIGHT_CASES[case]
    experiment = case.replace(" ", "-")
    config = validate(compose_config([*TINY, *isolate(store), f"tracking.experiment={experiment}", *overrides]))
    expected = expected.replace("experiment 'test'", f"experiment '{experiment}'")
    with pytest.raises(ConfigError, match="^" + expected.replace("(", r"\(").replace(")", r"\)")):
        preflight(config, tmp_path / "out")


def test_preflight_rejects_an_unwritable_output_folder_and_a_deleted_experiment(store, tmp_path):
    config = validate(compose_config([*TINY, *isolate(store), "tracking.experiment=deleted"]))
    with pytest.raises(ConfigError, match="output folder '/proc/retina-seg' is not writable"):
        preflight(config, READ_ONLY)
    client = MlflowClient(config.tracking.uri)
    client.delete_experiment(client.get_experiment_by_name("deleted").experiment_id)
    with pytest.raises(ConfigError, match=r"tracking.experiment='deleted' is deleted .*: restore it"):
        preflight(config, tmp_path / "out")


def test_unwritable_artifact_location_stops_the_command_before_training(tmp_path):
    """It used to be found after training: a traceback, a FAILED run and no artifacts."""
    done = run_cli("retina_seg.run", [*TINY, *isolate(tmp_path), f"tracking.artifact_location={READ_ONLY}/art"],
                   tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert f"artifact location 'file://{READ_ONLY}/art'" in line and "Traceback" not in done.stderr
    assert runs_in(tmp_path) == [] and "epoch" not in (tmp_path / "hydra" / "run.log").read_text()


def test_sigint_and_sigterm_end_killed_with_one_line_and_130_or_143(tmp_path):
    """Both signals after the first epoch: one line each, no traceback, the run KILLED with its files."""
    procs = {sig: start(tmp_path, sig.name, "trainer.epochs=500", "trainer.early_stopping_patience=500")
             for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for sig, proc in procs.items():
            wait_for_line(proc, tmp_path / sig.name / "run.log", "epoch 1/500")
        for sig, proc in procs.items():
            proc.send_signal(sig)
        results = {sig: (proc.wait(timeout=300), proc.stderr.read()) for sig, proc in procs.items()}
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    runs = {run.info.run_id: run for run in runs_in(tmp_path)}
    for sig, (code, stderr) in results.items():
        assert code == 128 + sig, stderr[-2000:]
        assert "Traceback" not in stderr
        [line] = [line for line in stderr.splitlines() if line.startswith("interrupted")]
        run_id = line.split()[2]
        assert line == f"interrupted: run {run_id} marked KILLED; best weights and history logged"
        assert runs[run_id].info.status == "KILLED"
        assert runs[run_id].data.tags["failure_reason"] == f"interrupted by signal {int(sig)}"
        assert {"resnet18_Retinal.json", "resnet18_Retinal.csv", "resnet18_Retinal.h5"} <= artifact_names(
            tmp_path, run_id)


def test_every_bad_data_file_is_listed_before_training(tmp_path):
    from tests import layouts

    expected = layouts.folder_with_bad_files(tmp_path / "own")
    done = run_cli("retina_seg.run", [*TINY, *isolate(tmp_path), "data=folder", f"data.root={tmp_path}/own"],
                   tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert sorted(line.split(": ")[1].rsplit("/", 1)[1] for line in lines) == sorted(expected)
    assert "Traceback" not in done.stderr and runs_in(tmp_path) == []


def test_a_loss_that_becomes_nan_fails_the_run_at_once(tmp_path):
    """A huge loss scale and step size overflow the weights in the first update: the loss becomes NaN."""
    done = run_cli("retina_seg.run", [*TINY, *isolate(tmp_path), "trainer.lr=1e38", "loss=dice", "loss.dice=1e15",
                                      "trainer.epochs=3"], tmp_path)
    assert done.returncode == 1, done.stderr[-2000:]
    [run] = runs_in(tmp_path)
    reason = run.data.tags["failure_reason"]
    assert run.info.status == "FAILED" and reason.startswith("loss became NaN at epoch 1;"), reason
    [line] = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert line == f"error: run {run.info.run_id} FAILED: {reason}" and "Traceback" not in done.stderr
    assert "epoch 2/3" not in (tmp_path / "hydra" / "run.log").read_text()


def test_a_model_that_cannot_learn_fails_the_run_saying_so(tmp_path):
    """Masks that have nothing to do with their images: no model can beat chance, in any epoch."""
    from tests import layouts

    root = layouts.folder(tmp_path / "own")
    noise = np.random.default_rng(0)
    for mask in (root / "masks").iterdir():
        cv2.imwrite(str(mask), (noise.random((layouts.SIZE, layouts.SIZE)) < 0.5).astype(np.uint8) * 255)
    cfg = compose_config([*TINY, *isolate(tmp_path), "data=folder", f"data.root={root}", "trainer.epochs=3",
                          "trainer.divergence_patience=2", "trainer.early_stopping_patience=5"])
    with pytest.raises(TrainingDiverged, match=r"validation ROC AUC 0\.[45]\d\d \(val_auroc: per channel over all "
                                                r"validation pixels, then the mean\) at chance \(<= 0.55\) for 2 "
                                                r"epoch\(s\), up to epoch 2: the model is not learning; check that "
                                                r"the masks match their images"):
        run_job(cfg, tmp_path / "work")
    [run] = runs_in(tmp_path)
    assert run.info.status == "FAILED" and run.data.tags["failure_reason"].startswith("validation ROC AUC")
    history = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").get_metric_history(run.info.run_id, "val_auroc")
    assert [m.step for m in history] == [0, 1] and all(m.value <= 0.55 for m in history)


def test_a_slow_lesion_start_at_chance_is_not_taken_for_divergence(tmp_path):
    """Rare lesions, multi-label: the first epoch's validation ROC AUC sits at chance while the model starts to
    learn (validation loss and AUPR improve); the guard waits for its patience, and the run finishes."""
    cfg = compose_config([*TINY, *isolate(tmp_path), "data.task=lesions", "loss=bce_dice", "data.num_images=10",
                          "trainer.epochs=3", "trainer.steps_per_epoch=12", "trainer.run_eagerly=false",
                          "trainer.divergence_patience=2"])
    run_job(cfg, tmp_path / "work")
    [run] = runs_in(tmp_path)
    assert run.info.status == "FINISHED"
    history = pd.read_csv(tmp_path / "work" / "artifacts" / "resnet18_Retinal.csv")
    assert history["val_auroc"].iloc[0] <= 0.55 < history["val_auroc"].iloc[-1], history.T
    assert history["val_maupr"].iloc[-1] > 2 * history["val_maupr"].iloc[0], history.T
    assert history["val_loss"].is_monotonic_decreasing, history.T
    assert run.data.params["trainer.monitor"] == "val_maupr"  # a lesion run is steered by the challenge's score
    assert {"val_aupr_ma", "val_aupr_he", "val_aupr_ex", "val_maupr"} <= set(run.data.metrics)


def test_a_loss_that_explodes_fails_the_run_at_once():
    """An epoch's training loss ten times its lowest so far: the optimisation has blown up, whatever the rest says."""
    from retina_seg.training.callbacks import DivergenceGuard

    guard = DivergenceGuard(patience=5)
    guard.set_model(tf.keras.Sequential([tf.keras.layers.Dense(1)]))
    for epoch, loss in enumerate([0.9, 0.5, 0.7]):
        guard.on_epoch_end(epoch, {"loss": loss, "val_auroc": 0.8})
    assert guard.reason is None and not guard.model.stop_training
    guard.on_epoch_end(3, {"loss": 6.0, "val_auroc": 0.8})
    assert guard.model.stop_training
    assert guard.reason == "training loss exploded at epoch 4: 6, over 10x its lowest epoch value 0.5; lower trainer.lr"


def test_kill_9_then_reconcile_then_resume_finishes_with_the_full_history(tmp_path):
    """kill -9 leaves a RUNNING run; reconcile marks it KILLED; resume continues it to the last epoch."""
    from retina_seg.tracking.recovery import reconcile

    proc = start(tmp_path, "killed", "trainer.epochs=3", "trainer.early_stopping_patience=5")
    try:
        wait_for_line(proc, tmp_path / "killed" / "run.log", "checkpoint: epoch 1 ")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    [run] = runs_in(tmp_path)
    run_id = run.info.run_id
    assert run.info.status == "RUNNING" and run.data.tags["pid"] == str(proc.pid)
    assert {"resnet18_Retinal.json", "config.yaml", "resnet18_Retinal.h5", "resnet18_Retinal.csv"} <= artifact_names(
        tmp_path, run_id)

    tidied = run_cli("retina_seg.reconcile", [*isolate(tmp_path)[:2], "tracking.experiment=test"], tmp_path)
    assert tidied.returncode == 0, tidied.stderr[-2000:]
    assert f"run {run_id} (resnet18-unet-synthetic) RUNNING -> KILLED: process {proc.pid} on " in tidied.stdout
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    assert client.get_run(run_id).info.status == "KILLED"
    assert reconcile(client, [run.info.experiment_id], stale_minutes=10) == []  # idempotent

    resumed = run_cli("retina_seg.run", [f"resume={run_id}", *isolate(tmp_path)], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    [run] = runs_in(tmp_path)
    assert run.info.run_id == run_id and run.info.status == "FINISHED" and "test_f1" in run.data.metrics
    history = pd.read_csv(client.download_artifacts(run_id, "resnet18_Retinal.csv", str(tmp_path / "dl")))
    assert list(history["epoch"]) == [0, 1, 2]
    assert {m.step for m in client.get_metric_history(run_id, "val_loss")} == {0, 1, 2}
    assert "resuming run" in (tmp_path / "hydra" / "run.log").read_text()

