"""Shared helpers: compose the real config tree against a throw-away MLflow store and data cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from retina_seg.config import CONF_DIR, PROJECT_ROOT

# Tiny settings every end-to-end test starts from: 64 px images, a handful of them, one short epoch.
TINY = ["trainer=fast", "image_size=64", "data.num_images=8", "backbone=resnet18", "augmentation=none"]


def isolate(tmp_path: Path) -> list[str]:
    """Overrides that point the store, the artifacts and the synthetic cache into tmp_path."""
    return [f"tracking.uri=sqlite:///{tmp_path}/mlflow.db", f"tracking.artifact_location={tmp_path}/artifacts",
            f"data.root={tmp_path}/cache", "tracking.experiment=test"]


def compose_config(overrides: list[str], name: str = "config"):
    """The real config tree composed like the command line does (`name`: config, evaluate or predict)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=overrides)


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
