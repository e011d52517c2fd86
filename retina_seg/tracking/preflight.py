"""The pre-flight of a training job: everything outside the config that can stop it, tried for real in
seconds before any data is read or any model built.

A path typo in the artifact location used to surface after an hour of training, as a traceback and
a FAILED run without artifacts; here each problem is one line naming the thing and the fix.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow
from mlflow.entities import LifecycleStage
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

from retina_seg.config import Config, ConfigError
from retina_seg.tracking.runs import check_tracking, ensure_experiment, writable


def preflight(config: Config, output_dir: Path) -> str:
    """Check store, experiment, artifact location, data root and output folder; returns the experiment id."""
    check_tracking(config.tracking)
    experiment_id = _experiment(config)
    _artifact_location(config, mlflow.get_experiment(experiment_id).artifact_location)
    _data_root(config)
    if not _creatable(output_dir):
        raise ConfigError(f"output folder '{output_dir}' is not writable: set hydra.run.dir to a writable folder")
    return experiment_id


def _creatable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return writable(folder)


def _experiment(config: Config) -> str:
    tracking = config.tracking
    found = mlflow.MlflowClient(tracking.uri).get_experiment_by_name(tracking.experiment)
    if found is not None and found.lifecycle_stage == LifecycleStage.DELETED:
        raise ConfigError(f"tracking.experiment={tracking.experiment!r} is deleted in "
                          f"{tracking.uri}: restore it (`mlflow experiments restore "
                          f"--experiment-id {found.experiment_id}`) or choose another name")
    try:
        return ensure_experiment(tracking)
    except Exception as exc:
        raise ConfigError(f"tracking.experiment={tracking.experiment!r} cannot be created in "
                          f"{tracking.uri}: {str(exc).strip().splitlines()[0][:200]}") from exc


def _artifact_location(config: Config, location: str) -> None:
    """Write and delete a probe file where the experiment keeps its artifacts (a folder, or a server's
    proxied store), exactly as a run will."""
    probe_root = f"{location.rstrip('/')}/.preflight"
    try:
        repository = get_artifact_repository(probe_root)
        with tempfile.NamedTemporaryFile(prefix="probe-", suffix=".txt") as probe:
            repository.log_artifact(probe.name)
        repository.delete_artifacts()
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        hint = ("choose a writable tracking.artifact_location with a new tracking.experiment (an existing "
                "experiment keeps the location it was created with)")
        raise ConfigError(f"artifact location '{location}' of experiment "
                          f"{config.tracking.experiment!r} is not writable ({reason}): {hint}") from exc


def _data_root(config: Config) -> None:
    root = Path(config.data.root)
    if config.data.name == "synthetic":  # a cache the job may have to create
        existing = next(p for p in (root, *root.parents) if p.exists())
        if not existing.is_dir() or not writable(existing):
            raise ConfigError(f"data.root '{root}': '{existing}' is not a writable folder for the synthetic "
                              "dataset cache: choose a writable data.root")
        return
    if not root.is_dir():
        return  # left to the dataset adapter, whose message shows the expected layout
    try:
        next(root.iterdir(), None)
    except OSError as exc:
        raise ConfigError(f"data.root '{root}' cannot be read ({exc.strerror}): check its permissions") from exc
