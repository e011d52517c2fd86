"""`python -m retina_seg.evaluate run_id=<id> [data=<name> data.root=<path>]`: re-evaluate a logged model.

Without a data override the run's own dataset, preprocessing and split seed are used.

A trained model is evaluated at native resolution through the same `Predictor` that `predict`
uses, metrics are computed on the test split. On the run's own dataset the threshold is chosen on its
validation split; on another dataset it is the run's own validation threshold (`threshold=source`, what
`predict` and the served model apply) or chosen on that dataset's validation split (`threshold=target`).
The command re-evaluates a logged model on any dataset (cross-dataset evaluation) and logs the
result as a new run nested under the training run, so the original test metrics stay as they were.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import hydra
import mlflow
import pandas as pd
from hydra.core.hydra_config import HydraConfig
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from retina_seg.cli import run_app, user_errors
from retina_seg.config import (
    Config,
    ConfigError,
    DataConfig,
    EvaluateConfig,
    InferenceConfig,
    Rescale,
    Sampling,
    Task,
    ThresholdRule,
    compose_tree,
    describe_inference,
    inference_in_force,
    validate,
)
from retina_seg.data.adapters import ADAPTERS, OFFICIAL_TEST
from retina_seg.data.folds import split_record
from retina_seg.data.loading import list_samples, load_splits
from retina_seg.data.scale import median_fov_width, rescale_to_fov
from retina_seg.evaluation.cross_dataset import pivot_markdown, write_cross_dataset
from retina_seg.evaluation.scoring import evaluate_model, log_summary
from retina_seg.reporting.report import run_sections, write_report
from retina_seg.tracking import artifacts
from retina_seg.tracking.reload import LoggedModel, find_run, load_logged_model
from retina_seg.tracking.runs import check_tracking, log_staged, tracked_run

log = logging.getLogger(__name__)


def reevaluate(config: EvaluateConfig, workdir: Path, own_data: bool, overrides: Sequence[str] = ()) -> dict:
    """Evaluate the model of run `config.run_id`, on its own dataset and split (`own_data`) or on the
    configured one, with the run's own inference settings under the command line's `inference.*` `overrides`;
    log the result as a run nested under the training run."""
    run_id = _run_ids(config)[0]
    check_tracking(config.tracking)
    if own_data:
        refuse_seen_images(find_run(MlflowClient(config.tracking.uri), run_id, config.tracking.uri))
    logged = load_logged_model(run_id, config.tracking.uri, trust=config.trust_model)
    trained: Config = logged.config
    data, seed = (trained.data, trained.seed) if own_data else (config.data, config.seed)
    check_channels(logged, run_id, data)
    # the model only works with the preprocessing and scale it was trained with
    samples = list_samples(data, seed)  # once: an IDRiD copy without its test set says so once
    splits = load_splits(data, trained.preprocess, seed, samples, config.cache_dir)
    settings = settings_in_force(logged, overrides)
    if not own_data:
        return evaluate_on_other_data(logged, run_id, data, samples, splits, config, settings,
                                      artifacts.staging(workdir))[0]
    # a fold ensemble's folds trained on its own validation images: keep the threshold it was logged with
    thresholds = logged.thresholds if len(logged.models) > 1 else None
    return evaluate_logged(logged, run_id, data, samples, splits, config, settings, artifacts.staging(workdir),
                           thresholds=thresholds)


def settings_in_force(logged: LoggedModel, overrides: Sequence[str]) -> InferenceConfig:
    """The run's own inference settings (what its recipe measured) under the command line's, said in one line."""
    settings, given = inference_in_force(logged.config.inference, overrides)
    log.info(describe_inference(settings, given))
    return settings


def at_training_scale(splits: dict, logged: LoggedModel, run_id: str, uri: str,
                      settings: InferenceConfig) -> tuple[dict, float]:
    """Another dataset's images (with masks and FOVs) at the scale the model was trained at, by the width of the
    field of view (`inference.rescale=fov`, patch-trained models): the splits and the test split's median factor;
    metrics are then computed at that scale. Unchanged (factor 1) otherwise."""
    if settings.rescale is not Rescale.fov or logged.config.data.sampling is not Sampling.patches:
        return splits, 1.0
    width = training_fov_width(logged, run_id, uri)
    rescaled = {split: rescale_to_fov(arrays, width) for split, arrays in splits.items()}
    return {split: arrays for split, (arrays, _) in rescaled.items()}, rescaled["test"][1]


def evaluate_on_other_data(logged: LoggedModel, run_id: str, data: DataConfig, samples: list, splits: dict,
                           config: EvaluateConfig, settings: InferenceConfig, staging: Path) -> tuple[dict, float]:
    """`evaluate_logged` on a dataset other than the run's own: at the training scale, with the thresholds of
    `config.threshold`: the run's own validation thresholds (source: what `predict` and the served model apply,
    since a deployment has no labelled target images), or chosen on the target's validation split (target) with
    test F1 at the run's own beside. Returns the summary and the scale factor."""
    splits, scale = at_training_scale(splits, logged, run_id, config.tracking.uri, settings)
    chosen = ({"thresholds": logged.thresholds} if config.threshold is ThresholdRule.source
              else {"source_thresholds": logged.thresholds})
    summary = evaluate_logged(logged, run_id, data, samples, splits, config, settings, staging,
                              {"threshold_rule": config.threshold.value, "rescale_factor": scale}, **chosen)
    return summary, scale


def _run_ids(config: EvaluateConfig) -> list[str]:
    ids = [*([config.run_id] if config.run_id else []), *config.run_ids]
    if not ids:
        raise ConfigError("run_id is required: python -m retina_seg.evaluate run_id=<MLflow run id> [data=...]")
    return ids


def refuse_seen_images(run) -> None:
    """A cross-validation ensemble cannot be tested on its own dataset without an official test split:
    its folds together trained on every image."""
    dataset = run.data.tags.get("dataset")
    if "cv_folds" in run.data.tags and dataset not in OFFICIAL_TEST:
        raise ConfigError(f"run {run.info.run_id} is a cross-validation ensemble whose folds trained on every image "
                          f"of data={dataset} (no official test split): its out-of-fold test metrics are logged on "
                          "the run; evaluate it on another dataset (data=... data.root=...)")


def check_channels(logged: LoggedModel, run_id: str, data: DataConfig) -> None:
    channels = data.channels
    if len(channels) != logged.model.output_shape[-1]:
        raise ConfigError(f"data={data.name} has {len(channels)} channel(s) {channels} but run {run_id} "
                          f"predicts {logged.model.output_shape[-1]}")


def evaluate_logged(logged: LoggedModel, run_id: str, data: DataConfig, samples: list, splits: dict,
                    config: EvaluateConfig, settings: InferenceConfig, staging: Path, params: dict | None = None,
                    thresholds: dict | None = None, source_thresholds: dict | None = None) -> dict:
    """Evaluate on decoded `splits` of `data` (listed as `samples`; thresholds chosen on its validation
    split unless given; `source_thresholds`: see `evaluate_model`) with the inference `settings` in force;
    logged as a run nested under the evaluated run."""
    predictor = logged.predictor(settings)
    trained = logged.config
    tags = {"mlflow.parentRunId": run_id, "evaluates_run": run_id, "dataset": data.name,
            "backbone": trained.backbone.name, "arch": trained.arch.name.value}
    observers = {s.image.stem: s.second for s in samples if s.second}
    staging.mkdir(parents=True, exist_ok=True)
    (staging / artifacts.SPLIT).write_text(json.dumps(split_record(samples), indent=1))
    with tracked_run(config.tracking, staging, tags, experiment_id=logged.experiment_id) as run:
        mlflow.log_params({"evaluated_run_id": run_id, "data.name": data.name, "data.root": data.root,
                           "inference.stride": predictor.stride, "inference.flip_tta": settings.flip_tta,
                           "inference.rescale": settings.rescale.value,
                           "inference.precision_used": predictor.precision.name,
                           **(params or {})})
        summary = evaluate_model(predictor, splits, data.channels, staging, thresholds, observers,
                                 lesions=data.task is Task.lesions, source_thresholds=source_thresholds)
        log_summary(summary)
        # the report's config section describes the evaluated model
        write_report(staging, f"run {run_id} evaluated on {data.name} ({run.info.run_id})",
                     run_sections(staging, OmegaConf.structured(trained)))
        log_staged(staging)
    return summary


def target_data(name: str, roots: dict) -> DataConfig:
    """The data config of target dataset `name` (conf/data/<name>.yaml) with its root from `roots`."""
    if name not in ADAPTERS:
        raise ConfigError(f"targets has {name!r}: expected dataset names among {', '.join(sorted(ADAPTERS))}")
    root = roots.get(name)
    if root is None and name != "synthetic":
        raise ConfigError(f"roots.{name} is required to test on {name}: e.g. roots.{name}=/data/{name.upper()}")
    return validate(compose_tree("config", [f"data={name}", *([f"data.root={root}"] if root else [])])).data


def training_fov_width(logged: LoggedModel, run_id: str, uri: str) -> float:
    """The training set's median FOV width: logged with the run, else measured on its training images."""
    logged_width = logged.fov_width or MlflowClient(uri).get_run(run_id).data.metrics.get(artifacts.FOV_WIDTH)
    if logged_width:
        return logged_width
    trained = logged.config
    return median_fov_width(load_splits(trained.data, trained.preprocess, trained.seed)["train"])


def cross_dataset(config: EvaluateConfig, workdir: Path, overrides: Sequence[str] = ()) -> pd.DataFrame:
    """Every run on every target dataset: the trained-on x tested-on table (see `evaluation/cross_dataset.py`).
    Off the diagonal each pair is evaluated (and logged nested under its run); on it, a run's own logged
    test metrics are used. Runs, targets, roots, layouts and channel counts are all checked before
    anything is predicted."""
    ids = _run_ids(config)
    check_tracking(config.tracking)
    uri = config.tracking.uri
    client = MlflowClient(uri)
    trained_on = {run_id: find_run(client, run_id, uri).data.tags.get("dataset") for run_id in ids}
    targets, listed = {}, {}
    for name in config.targets:
        if any(dataset != name for dataset in trained_on.values()):
            targets[name] = target_data(name, config.roots)
            listed[name] = list_samples(targets[name], config.seed)  # a root that does not match its layout fails here
    pairs = []
    for run_id in ids:
        logged = load_logged_model(run_id, uri, trust=config.trust_model)
        settings = settings_in_force(logged, overrides)
        for name in config.targets:
            data = None if name == trained_on[run_id] else targets[name]
            if data is not None:
                check_channels(logged, run_id, data)
            pairs.append((run_id, logged, settings, name, data))
    rows = []
    for run_id, logged, settings, name, data in pairs:
        trained = logged.config
        row = {"trained_on": trained.data.name, "run_id": run_id, "tested_on": name, "scale": 1.0,
               "threshold_rule": config.threshold.value}
        if data is None:  # its own validation threshold is both the source's and the target's
            own = client.get_run(run_id).data.metrics
            if config.threshold is ThresholdRule.target:
                own = {**own, "test_f1_at_source_threshold": own["test_f1"], "source_threshold": own.get("threshold")}
            rows.append({**row, **own})
            continue
        splits = load_splits(data, trained.preprocess, config.seed, listed[name], config.cache_dir)
        summary, row["scale"] = evaluate_on_other_data(logged, run_id, data, listed[name], splits, config, settings,
                                                       artifacts.staging(workdir / f"{run_id[:8]}-{name}"))
        rows.append({**row, **summary})
    table = pd.DataFrame(rows)
    staging = artifacts.staging(workdir)
    write_cross_dataset(table, staging, config.threshold.value)
    experiment_id = pairs[0][1].experiment_id
    rules = sorted({settings.rescale.value for _, _, settings, _, _ in pairs})
    with tracked_run(config.tracking, staging, {"cross_dataset": ",".join(config.targets)},
                     experiment_id=experiment_id, run_name="cross-dataset"):
        mlflow.log_params({"runs": ",".join(ids)[:5000], "targets": ",".join(config.targets),
                           "inference.rescale": ",".join(rules), "threshold_rule": config.threshold.value})
        log_staged(staging)
    return table


@hydra.main(config_path="conf", config_name="evaluate", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> float:
    hydra_config = HydraConfig.get()
    # without data=... / data.*=... on the command line, evaluate on the run's own dataset and split
    own_data = not any(o.lstrip("+~").startswith(("data=", "data.")) for o in hydra_config.overrides.task)
    workdir = Path(hydra_config.runtime.output_dir)
    config = validate(cfg)
    overrides = hydra_config.overrides.task
    if config.targets:
        table = cross_dataset(config, workdir, overrides)
        print(pivot_markdown(table, "test_f1", f"test F1 at the {config.threshold.value} threshold"))
        return float(table["test_f1"].mean())
    return reevaluate(config, workdir, own_data, overrides)["test_f1"]


if __name__ == "__main__":
    run_app(main)
