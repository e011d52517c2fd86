"""Registry promotion: the best run of a sweep becomes a new version of a registered model, and an alias
(`champion`) names it, so serving `models:/<name>@champion` always serves the current best."""

from __future__ import annotations

import math
from dataclasses import dataclass

import mlflow
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from retina_seg.config import Mode, PromoteConfig
from retina_seg.errors import UserError
from retina_seg.tracking import artifacts
from retina_seg.tracking.runs import filter_string


class PromoteError(UserError):
    """Nothing to promote; the message says what was looked for."""


@dataclass
class Promotion:
    run: Run
    value: float
    version: str


def best_run(client: MlflowClient, config: PromoteConfig) -> tuple[Run, float]:
    """The finished run of the sweep with the best `metric` (runs without it, or without a logged model, are
    not candidates), searched in `tracking.experiment` only: a sweep id is the date-time name of a folder, so
    two users' sweeps on a shared server can carry the same one."""
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    if experiment is None:
        raise PromoteError(f"tracking.experiment={config.tracking.experiment!r} does not exist in "
                           f"{config.tracking.uri}")
    runs = client.search_runs([experiment.experiment_id], f"tags.sweep_id = {filter_string(config.sweep, 'sweep')}",
                              max_results=5000)
    if not runs:
        raise PromoteError(f"sweep={config.sweep!r}: no run carries this sweep id in experiment "
                           f"{config.tracking.experiment!r} of {config.tracking.uri}")
    candidates = [r for r in runs if r.info.status == "FINISHED"
                  and math.isfinite(r.data.metrics.get(config.metric, math.nan))
                  and r.outputs is not None and r.outputs.model_outputs]  # MLflow 3: models are run outputs
    if not candidates:
        raise PromoteError(f"sweep={config.sweep!r}: none of its {len(runs)} run(s) is FINISHED with metric "
                           f"{config.metric!r} and a logged model")
    pick = max if config.mode is Mode.max else min
    best = pick(candidates, key=lambda r: r.data.metrics[config.metric])
    return best, best.data.metrics[config.metric]


def promote(config: PromoteConfig) -> Promotion:
    """Register the sweep's best run as a new version of `model_name` and point `alias` at it."""
    mlflow.set_tracking_uri(config.tracking.uri)
    mlflow.set_registry_uri(config.tracking.uri)
    client = MlflowClient(config.tracking.uri, registry_uri=config.tracking.uri)
    run, value = best_run(client, config)
    version = mlflow.register_model(f"runs:/{run.info.run_id}/{artifacts.MODEL}", config.model_name,
                                    tags={"sweep_id": config.sweep, config.metric: str(value)})
    client.set_registered_model_alias(config.model_name, config.alias, version.version)
    return Promotion(run, value, version.version)
