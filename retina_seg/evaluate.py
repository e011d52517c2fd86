"""`python -m retina_seg.evaluate run_id=<id> [data=<name> data.root=<path>]`: re-evaluate a logged model.

Without a data override the run's own dataset, preprocessing and split seed are used.

A trained model is evaluated at native resolution through the same `Predictor` that `predict`
uses: the threshold is chosen on the validation split, metrics are computed on the test split.
The command re-evaluates a logged model on any dataset (cross-dataset evaluation) and logs the
result as a new run nested under the training run, so the original test metrics stay as they were.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
import mlflow
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from retina_seg.config import Config, ConfigError, EvaluateConfig, validate
from retina_seg.data.adapters import OFFICIAL_TEST
from retina_seg.data.loading import DataError, load_splits
from retina_seg.tracking.evaluation import evaluate_model, log_summary
from retina_seg.tracking.reload import ModelSourceError, load_logged_model
from retina_seg.tracking.runs import check_tracking, log_staged, tracked_run

log = logging.getLogger(__name__)


def reevaluate(config: EvaluateConfig, workdir: Path, own_data: bool) -> dict:
    """Evaluate the model of run `config.run_id`, on its own dataset and split (`own_data`) or on the
    configured one; log the result as a run nested under the training run."""
    run_id = config.run_id
    if not run_id:
        raise ConfigError("run_id is required: python -m retina_seg.evaluate run_id=<MLflow run id> [data=...]")
    check_tracking(config.tracking)
    logged = load_logged_model(run_id, config.tracking.uri, trust=config.trust_model)
    trained: Config = logged.config
    data, seed = (trained.data, trained.seed) if own_data else (config.data, config.seed)
    if own_data and len(logged.models) > 1 and data.name not in OFFICIAL_TEST:
        raise ConfigError(f"run {run_id} is a cross-validation ensemble whose folds trained on every image of "
                          f"data={data.name} (no official test split): its out-of-fold test metrics are logged on "
                          "the run; evaluate it on another dataset (data=... data.root=...)")
    channels = data.channels
    if len(channels) != logged.model.output_shape[-1]:
        raise ConfigError(f"data={data.name} has {len(channels)} channel(s) {channels} but run {run_id} "
                          f"predicts {logged.model.output_shape[-1]}")
    # the model only works with the preprocessing and scale it was trained with
    splits = load_splits(data, trained.preprocess, seed)
    predictor = logged.predictor(config.inference)
    staging = workdir / "artifacts"
    tags = {"mlflow.parentRunId": run_id, "evaluates_run": run_id, "dataset": data.name,
            "backbone": trained.backbone.name, "arch": trained.arch.name.value}
    with tracked_run(config.tracking, staging, tags, experiment_id=logged.experiment_id):
        mlflow.log_params({"evaluated_run_id": run_id, "data.name": data.name, "data.root": data.root,
                           "inference.stride": predictor.stride, "inference.flip_tta": config.inference.flip_tta})
        summary = evaluate_model(predictor, splits, channels, staging)
        log_summary(summary)
        log_staged(staging)
    return summary


@hydra.main(config_path="../conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> float:
    hydra_config = HydraConfig.get()
    # without data=... / data.*=... on the command line, evaluate on the run's own dataset and split
    own_data = not any(o.lstrip("+~").startswith(("data=", "data.")) for o in hydra_config.overrides.task)
    try:
        return reevaluate(validate(cfg), Path(hydra_config.runtime.output_dir), own_data)["test_f1"]
    except (ConfigError, DataError, ModelSourceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
