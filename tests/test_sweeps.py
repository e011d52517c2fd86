"""Multirun sweeps, the comparison table, Optuna search, parallel jobs and distributed training."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from retina_seg.compare import CompareError, compare
from retina_seg.config import PROJECT_ROOT, validate
from tests.conftest import TINY, isolate, run_cli, runs_in, unavailable

pytestmark = pytest.mark.slow  # end-to-end: left out of make test-fast

SWEEP_TINY = [t for t in TINY if not t.startswith("backbone")] + ["backbone=resnet18"]
CROP_TOO_BIG = "{_target_:albumentations.RandomCrop,height:96,width:96}"


def multirun(tmp_path, *overrides, migrated: bool = True):
    return subprocess.run([sys.executable, "-m", "retina_seg.run", "-m", *overrides, *isolate(tmp_path, migrated),
                           f"hydra.sweep.dir={tmp_path}/sweep"], capture_output=True, text=True, timeout=900,
                          cwd=PROJECT_ROOT)


def compare_config(tmp_path, *overrides):
    from hydra import compose, initialize_config_dir

    from retina_seg.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR / "apps" / "compare"), version_base="1.3"):
        return validate(compose("compare", [*isolate(tmp_path)[:2], "tracking.experiment=test", *overrides]))


def test_sweep_runs_every_job_tags_them_and_a_failure_hides_nothing(tmp_path):
    done = multirun(tmp_path, *SWEEP_TINY, f"+augmentation.transforms=[],[{CROP_TOO_BIG}]")
    assert done.returncode != 0  # Hydra reports the failed job at the end
    runs = sorted(runs_in(tmp_path), key=lambda r: r.data.tags["sweep_job"])
    assert [r.info.status for r in runs] == ["FINISHED", "FAILED"]
    assert {r.data.tags["sweep_id"] for r in runs} == {"sweep"}
    assert [r.info.run_name for r in runs] == ["resnet18-unet-synthetic-job0", "resnet18-unet-synthetic-job1"]

    table = compare(compare_config(tmp_path), tmp_path / "compare")
    assert list(table["status"]) == ["FINISHED", "FAILED"]  # failed runs are listed, last
    assert table.loc[0, "test_f1"] == pytest.approx(runs[0].data.metrics["test_f1"])
    assert table.loc[0, "epochs"] == 1 and table.loc[0, "parameters"] > 1_000_000
    assert table.loc[0, "inference_ms"] > 0 and table.loc[0, "train_minutes"] > 0
    files = {p.name for p in (tmp_path / "compare" / "artifacts").iterdir()}
    assert files == {"comparison.csv", "comparison.md", "comparison_bar.png", "validation_curves.png", "report.md",
                     "report.html", "comparison_bar.svg", "validation_curves.svg"}
    report = (tmp_path / "compare" / "artifacts" / "report.html").read_text()
    assert report.count("data:image/png;base64,") == 2 and runs[0].info.run_id not in report  # ids dropped
    assert len(pd.read_csv(tmp_path / "compare" / "artifacts" / "comparison.csv")) == 2
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    [logged] = [r for r in client.search_runs([runs[0].info.experiment_id]) if "comparison" in r.data.tags]
    assert logged.data.tags["comparison"] == "sweep sweep" and logged.data.tags["best_run"] == runs[0].info.run_id
    assert logged.info.run_name == "compare-sweep"


def test_sweep_over_an_invalid_value_fails_before_any_job_trains(tmp_path):
    done = multirun(tmp_path, *SWEEP_TINY, "image_size=64,100")
    assert done.returncode == 2
    assert "error: sweep job image_size=100: image_size=100 is invalid: expected a multiple of 32" in done.stderr
    assert runs_in(tmp_path) == [] and "Launching" not in done.stdout + done.stderr


def test_compare_without_finished_runs_says_so(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("test")
    client.set_terminated(client.create_run(experiment).info.run_id, "FAILED")
    with pytest.raises(CompareError, match=r"experiment test in experiment 'test' has no finished runs .*FAILED"):
        compare(compare_config(tmp_path), tmp_path / "compare")
    with pytest.raises(CompareError, match=r"experiment 'elsewhere' does not exist"):
        compare(compare_config(tmp_path, "experiment=elsewhere"), tmp_path / "compare")


def test_optuna_search_records_trials_and_compare_reports_the_best(tmp_path):
    done = multirun(tmp_path, *SWEEP_TINY, "hparams_search=optuna", "hydra.sweeper.n_trials=2")
    assert done.returncode == 0, done.stderr[-2000:]
    runs = runs_in(tmp_path)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert len({r.data.params["trainer.lr"] for r in runs}) == 2 and all("seed" in r.data.params for r in runs)
    table = compare(compare_config(tmp_path, "metric=objective"), tmp_path / "compare")
    assert table.loc[0, "objective"] == max(r.data.metrics["objective"] for r in runs)
    assert "Best value" in done.stdout + done.stderr


def test_parallel_jobs_share_one_new_sqlite_store(tmp_path):
    """Two jobs at once create and fill one store (the creation race itself: tests/tracking/test_store.py)."""
    done = multirun(tmp_path, *SWEEP_TINY, "hydra/launcher=local_parallel", "hydra.launcher.n_jobs=2", "seed=1,2",
                    migrated=False)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = runs_in(tmp_path)
    assert sorted(r.data.params["seed"] for r in runs) == ["1", "2"]
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    for run in runs:
        assert run.info.status == "FINISHED"
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"resnet18_Retinal.json", "resnet18_Retinal.h5", "resnet18_Retinal.csv", "metrics"} <= names


MIRRORED = """
import sys, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from retina_seg.run import run_job
from tests.conftest import compose_config
tmp = sys.argv[1]
result = run_job(compose_config(sys.argv[2:]), __import__("pathlib").Path(tmp) / "work")
print("RUN", result.run_id)
"""


def test_mirrored_strategy_trains_on_two_logical_devices(tmp_path):
    overrides = [*SWEEP_TINY, *isolate(tmp_path), "trainer.strategy=mirrored", "trainer.batch_size=4",
                 "trainer.run_eagerly=false"]  # a graph, as a data-parallel job on GPUs runs
    done = subprocess.run([sys.executable, "-c", MIRRORED, str(tmp_path), *overrides], capture_output=True,
                          text=True, timeout=600, cwd=PROJECT_ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    [run] = runs_in(tmp_path)
    assert run.info.status == "FINISHED" and run.data.params["trainer.replicas"] == "2"


@pytest.mark.parametrize("launcher", ["local_parallel", "slurm", "ray_cluster"])
def test_launcher_configs_compose(launcher):
    plugin = {"local_parallel": "hydra_plugins.hydra_joblib_launcher", "slurm": "hydra_plugins.hydra_submitit_launcher",
              "ray_cluster": "hydra_plugins.hydra_ray_launcher"}[launcher]
    if importlib.util.find_spec(plugin) is None:
        unavailable(f"{plugin} is not installed (pip install -e '.[ray]')")
    from hydra import compose, initialize_config_dir

    from retina_seg.config import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.split(".")[1] == plugin.split(".")[1]
    if launcher == "slurm":
        assert cfg.hydra.launcher.gpus_per_node == 1 and cfg.hydra.launcher.timeout_min == 240


def test_run_against_a_real_mlflow_server(tmp_path, mlflow_server):
    done = run_cli("retina_seg.run", [*TINY, "tracking=server", f"tracking.uri={mlflow_server}",
                                      f"data.root={tmp_path}/cache", "tracking.experiment=server-test"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    client = MlflowClient(mlflow_server)
    [run] = client.search_runs([client.get_experiment_by_name("server-test").experiment_id])
    assert run.info.status == "FINISHED" and "test_f1" in run.data.metrics
    assert {"resnet18_Retinal.json", "resnet18_Retinal.h5", "resnet18_Retinal.csv"} <= {
        a.path for a in client.list_artifacts(run.info.run_id)}
