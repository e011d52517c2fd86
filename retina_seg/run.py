"""`python -m retina_seg.run [overrides]`: compose, validate, train, evaluate, and log one MLflow run.

The runner only wires the stages together; each stage gets the part of the config it needs.
Everything cheap that can reject the config (schema, the pre-flight of store, artifact location and
folders, data files, model build) runs before the MLflow run starts, so bad input leaves no
half-written run behind; `resume=<run id>` continues a KILLED or FAILED run from its checkpoint. (The package's
__init__ has already selected the Keras 2 stack before TensorFlow is imported here.)
With `-m` every job is its own run, tagged with the sweep it belongs to.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import albumentations as A
import cv2
import hydra
import mlflow
import numpy as np
import tensorflow as tf
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from retina_seg.cli import interrupted, run_app, user_errors
from retina_seg.config import Config, ConfigError, Sampling, Task, refuse_overridden_smoke_trainer, validate
from retina_seg.data.augment import build_augmentation
from retina_seg.data.folds import fold_samples, plan_folds, split_record
from retina_seg.data.loading import (
    capped_size,
    list_samples,
    load_splits,
    read_image,
    regroup,
    resize_arrays,
)
from retina_seg.data.pipeline import training_dataset, validation_set
from retina_seg.data.scale import median_fov_width
from retina_seg.errors import INTERNAL_ERROR, SERVER_LOST, sigterm_as_interrupt
from retina_seg.evaluation.crossval import (
    fold_statistics,
    fold_table,
    mean_thresholds,
    out_of_fold,
    write_fold_table,
)
from retina_seg.evaluation.scoring import evaluate_model, log_summary
from retina_seg.inference.drift import pooled
from retina_seg.inference.ensemble import EnsemblePredictor
from retina_seg.inference.predictor import Predictor
from retina_seg.model.factory import build_model
from retina_seg.model.precision import at_precision
from retina_seg.model.precision import resolve as resolve_precision
from retina_seg.reporting.figures import plot_history
from retina_seg.reporting.model_card import write_model_card
from retina_seg.reporting.report import cv_sections, run_sections, write_report
from retina_seg.serve.pyfunc import log_pipeline_model
from retina_seg.tracking import artifacts
from retina_seg.tracking.outbox import Outbox, ServerLost, use_outage_limit
from retina_seg.tracking.preflight import preflight
from retina_seg.tracking.recovery import fetch_checkpoint, reconcile, resumed_config
from retina_seg.tracking.runs import (
    git_commit,
    log_dataset,
    log_staged,
    run_params,
    tracked_run,
)
from retina_seg.training.callbacks import CheckpointLogger, EpochMetrics
from retina_seg.training.fit import FitOutputs, TrainingDiverged, compile_model, distribution_strategy, fit
from retina_seg.training.machine import hardware_tags
from retina_seg.training.validation import Validation

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    run_id: str
    model: tf.keras.Model | None  # None for a cross-validation parent: its models are in the folds' runs
    metrics: dict
    objective: float  # best value of trainer.monitor on validation: what a sweeper optimizes


def run_job(cfg: DictConfig, workdir: Path, sweep_tags: dict | None = None, overrides: list[str] = ()) -> JobResult:
    """One training job from a composed config (k-fold cross-validation when `cv.folds` >= 2); files are
    staged in `workdir/artifacts` and logged. With `resume=<run id>` the job continues that run (its
    config, plus key=value `overrides`). The pre-flight and the tidying of this host's dead runs come first."""
    if cfg.get("resume"):
        cfg = resumed_config(cfg, list(overrides))
    config: Config = validate(cfg)
    if config.resume and config.cv.folds:
        raise ConfigError(f"resume={config.resume}: a cross-validation run cannot be resumed; start it again")
    use_outage_limit(config.tracking)  # before the job's first thread
    experiment_id = preflight(config, workdir)
    for change in reconcile(MlflowClient(config.tracking.uri), [experiment_id], stale_minutes=None):
        log.warning("reconcile: %s", change)
    samples = list_samples(config.data, config.seed)
    tags = {"backbone": config.backbone.name, "arch": config.arch.name.value, "dataset": config.data.name,
            "task": config.data.task.value, "git_commit": git_commit()}
    name = "-".join([config.backbone.name, config.arch.name.value, config.data.name,
                     *([f"job{sweep_tags['sweep_job']}"] if sweep_tags else [])])
    observers = {s.image.stem: s.second for s in samples if s.second}
    if config.cv.folds:
        return run_folds(cfg, config, samples, observers, workdir, tags, sweep_tags or {}, name)
    splits = load_splits(config.data, config.preprocess, config.seed, samples, config.cache_dir)
    return train_run(cfg, config, splits, split_record(samples), observers, workdir, {**tags, **(sweep_tags or {})},
                     name, example_photograph(samples))


def train_run(cfg: DictConfig, config: Config, splits: dict, split: dict, observers: dict, workdir: Path, tags: dict,
              name: str, example: np.ndarray, nested: bool = False) -> JobResult:
    """Build, train, evaluate, report and log one model on decoded `splits` (`split`: their image stems;
    `observers`: image stem -> second observer's mask file; `example`: the logged model's input example)."""
    tf.keras.utils.set_random_seed(config.seed)
    channels = config.data.channels
    patches = config.data.sampling is Sampling.patches
    fit_splits = splits if patches else {s: resize_arrays(splits[s], config.image_size) for s in ("train", "val")}
    augmentation = build_augmentation(config.augmentation, config.seed)
    strategy = distribution_strategy(config.trainer)
    precision = resolve_precision(config.trainer.precision)
    with strategy.scope():
        model = build_model(config.backbone.name, config.arch, len(channels), config.image_size,
                            config.encoder_weights, config.batchnorm_momentum, config.preprocess.normalization,
                            precision)
        compile_model(model, config.trainer, config.loss, precision)
    log.info("data %s: %s; %d replica(s); precision %s (%s)", config.data.name,
             {s: len(a) for s, a in splits.items()}, strategy.num_replicas_in_sync, precision.name, precision.reason)

    staging = artifacts.staging(workdir)
    staging.mkdir(parents=True, exist_ok=True)
    backbone = config.backbone.name
    (staging / artifacts.architecture(backbone)).write_text(at_precision(model.to_json(), "32"))  # any precision
    (staging / artifacts.CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))  # what `resume=` reads back
    (staging / artifacts.SPLIT).write_text(json.dumps(split, indent=1))
    if augmentation is not None:  # the resolved pipeline, every argument spelled out
        A.save(augmentation, str(staging / artifacts.AUGMENTATION), data_format="yaml")
    outputs = FitOutputs(weights=staging / artifacts.weights(backbone), history=staging / artifacts.history(backbone))
    done = None
    if config.resume:
        done = fetch_checkpoint(MlflowClient(config.tracking.uri), config.resume, backbone, staging)
        model.load_weights(str(outputs.weights))
        log.info("resuming run %s after epoch %d", config.resume, len(done))

    # the Outbox carries the run's logging through server restarts (see tracking/outbox.py)
    tags = {**tags, **hardware_tags(precision.name)}  # the machine, so that two runs' times compare fairly
    with tracked_run(config.tracking, staging, tags, run_name=name, nested=nested, run_id=config.resume) as run, \
            Outbox(config.tracking, run.info.run_id, workdir) as outbox:
        if not config.resume:  # a resumed run keeps its params and inputs; its config.yaml records any override
            mlflow.log_params({**run_params(config, OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)),
                               "model.parameters": model.count_params(),
                               "trainer.replicas": strategy.num_replicas_in_sync,
                               "trainer.precision_used": precision.name, "trainer.precision_reason": precision.reason,
                               # what the Predictor below resolves too; logged here, with the rest, while the
                               # server is known to answer (a call after training would fail a run in an outage)
                               "inference.precision_used": resolve_precision(config.inference.precision).name})
            log_dataset(config.data.name, config.data.root, {split: arrays.names for split, arrays in splits.items()})
        fov_width = median_fov_width(splits["train"])  # the scale photographs from other cameras are matched to
        outbox.log_artifacts(staging)  # architecture and config first: with a checkpoint they make a resumable run
        batch = config.trainer.batch_size
        steps = config.trainer.steps_per_epoch or math.ceil(len(splits["train"]) / batch)
        shares = [config.data.class_shares.get(c, 0.0) for c in channels] if config.data.class_shares else None
        train = training_dataset(fit_splits["train"], batch, config.image_size, patches, config.data.foreground_share,
                                 augmentation, config.seed, shares)
        windows = config.trainer.validation_windows if patches else None
        validation = Validation(*validation_set(fit_splits["val"], config.image_size, windows,
                                                config.data.foreground_share, config.seed + 1, shares,
                                                config.arch.size_multiple), channels, batch)
        started = time.perf_counter()
        loggers = [EpochMetrics(outbox.log_metrics),
                   CheckpointLogger(outputs.weights, outputs.history, outbox.log_files, run.info.run_id)]
        history = fit(model, train, validation, steps, config.trainer, outputs, loggers, done, config.verbose)
        seconds = time.perf_counter() - started
        # the share of this session's training time spent validating: what validation_windows trades for steps
        validating = history["validation_seconds"].iloc[0 if done is None else len(done):].sum()
        outbox.log_metrics({"train_seconds": seconds, "validation_share": validating / seconds})
        plot_history(history, staging / artifacts.CURVES)

        predictor = Predictor(model, config.image_size, config.data.sampling, config.inference,
                              max_side=config.data.max_side)
        # kept with the model (inference.rescale=fov) and logged with the test metrics
        summary = evaluate_model(predictor, evaluated(splits, config.trainer.evaluation_images), channels, staging,
                                 second=observers, lesions=config.data.task is Task.lesions,
                                 extra={artifacts.FOV_WIDTH: fov_width})
        log_summary(summary, outbox.log_metrics)
        write_report(staging, f"{name} ({run.info.run_id})", run_sections(staging, cfg))
        write_model_card(staging, config, f"{name} ({run.info.run_id})", fov_width, precision.name,
                         predictor.precision.name)
        outbox.log_artifacts(staging)
        outbox.log_model(partial(log_pipeline_model, staging, config, example))
        objective = float(history[config.trainer.monitor].agg(config.trainer.monitor_mode.value))
        kept = history[config.trainer.monitor].agg(f"idx{config.trainer.monitor_mode.value}")
        # `objective`: what a sweeper optimizes; `val_f1`: the validation F1 of the epoch whose weights were kept
        outbox.log_metrics({"objective": objective, "val_f1": float(history["val_f1-score"][kept])})
    return JobResult(run_id=run.info.run_id, model=model, metrics=summary, objective=objective)


def run_folds(cfg: DictConfig, config: Config, samples: list, observers: dict, workdir: Path, tags: dict,
              sweep_tags: dict, name: str) -> JobResult:
    """k-fold cross-validation: a parent run holding one nested training run per fold, the split of every
    fold (`cv_split.json`), the per-fold table with mean and sd over folds, and the folds' joint test
    metrics (see evaluation/crossval.py). Every fold's split is built and every file decoded before the
    parent run starts, so bad input leaves no run behind."""
    plan = plan_folds(samples, config.data.name, config.cv.folds, config.seed)
    folds = [fold_samples(samples, plan, k, config.data.val_fraction, config.seed) for k in range(plan.folds)]
    decoded = load_splits(config.data, config.preprocess, config.seed, folds[0], config.cache_dir)
    fold_splits = [regroup(decoded, fold, config.data) for fold in folds]
    example = example_photograph(samples)
    staging = artifacts.staging(workdir)
    staging.mkdir(parents=True, exist_ok=True)
    (staging / artifacts.CONFIG).write_text(OmegaConf.to_yaml(cfg, resolve=True))
    record = {"folds": plan.folds, "seed": config.seed, "official_test": plan.official_test,
              "held_out_fold_is": "val" if plan.official_test else "test",
              "subgroups": {s.image.stem: s.subgroup for s in samples if s.subgroup},
              "splits": [split_record(fold) for fold in folds]}
    (staging / artifacts.CV_SPLIT).write_text(json.dumps(record, indent=1))
    channels = config.data.channels
    fov_width = median_fov_width(decoded["train"])  # as each fold run keeps its own
    scale = {artifacts.FOV_WIDTH: fov_width}
    with tracked_run(config.tracking, staging, {**tags, **sweep_tags, "cv_folds": str(plan.folds)},
                     run_name=f"{name}-cv{plan.folds}") as run:
        mlflow.log_params(run_params(config, OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)))
        results = [train_run(cfg, config, fold_splits[k], record["splits"][k], observers, workdir / f"fold{k}",
                             {**tags, "cv_fold": str(k)}, f"{name}-fold{k}", example, nested=True)
                   for k in range(plan.folds)]
        summaries = [{**r.metrics, "objective": r.objective} for r in results]
        table = fold_table([(r.run_id, s) for r, s in zip(results, summaries, strict=True)],
                           [{s: len(a) for s, a in f.items()} for f in fold_splits])
        write_fold_table(table, staging, f"{config.cv.folds}-fold cross-validation of {name}")
        thresholds = mean_thresholds(summaries, channels)
        if plan.official_test:  # every fold saw the same official test images: evaluate the ensemble on them
            ensemble = EnsemblePredictor([Predictor(r.model, config.image_size, config.data.sampling, config.inference)
                                          for r in results])
            summary = evaluate_model(ensemble, evaluated(fold_splits[0], config.trainer.evaluation_images), channels,
                                     staging, thresholds, observers, extra=scale)
        else:
            summary = out_of_fold([artifacts.staging(workdir / f"fold{k}") for k in range(plan.folds)], channels,
                                  thresholds, staging, scale)
        log_summary(summary)
        mlflow.log_metrics({k: v for k, v in fold_statistics(table).items() if math.isfinite(v)})
        objective = float(table["objective"].mean())
        mlflow.log_metric("objective", objective)
        title = f"{name}: {plan.folds}-fold cross-validation ({run.info.run_id})"
        write_report(staging, title, cv_sections(staging, cfg))
        # the served ensemble is watched against every fold's validation images, each seen by its own fold
        fold_records = [json.loads((artifacts.staging(workdir / f"fold{k}") / artifacts.VALIDATION_STATISTICS)
                                   .read_text()) for k in range(plan.folds)]
        (staging / artifacts.VALIDATION_STATISTICS).write_text(json.dumps(pooled(fold_records, channels), indent=1))
        write_model_card(staging, config, title, fov_width, resolve_precision(config.trainer.precision).name,
                         resolve_precision(config.inference.precision).name)
        log_staged(staging)
        log_pipeline_model(staging, config, example,  # the served fold ensemble
                           folds=[artifacts.staging(workdir / f"fold{k}") for k in range(plan.folds)])
    log.info("cross-validation run %s: test F1 %.4f +- %.4f over %d folds", run.info.run_id, table["test_f1"].mean(),
             table["test_f1"].std(ddof=1), plan.folds)
    return JobResult(run_id=run.info.run_id, model=None, metrics=summary, objective=objective)


def evaluated(splits: dict, limit: int | None) -> dict:
    """The splits the end-of-run evaluation predicts: at most `limit` validation and test images each, the first in
    file order (`trainer.evaluation_images`; None: all)."""
    if limit is None:
        return splits
    return {split: arrays.take(range(min(limit, len(arrays)))) if split in ("val", "test") else arrays
            for split, arrays in splits.items()}


def example_photograph(samples: list) -> np.ndarray:
    """The first test photograph of `samples` as read from its file (no preprocessing), at most 256 px a side:
    the logged model's input example, small so that the check MLflow runs on it when logging stays quick.
    Made once per job, after its files were checked, from the samples it listed (listing again would
    repeat the adapters' log lines)."""
    sample = next(s for s in samples if s.split == "test")
    image = read_image(sample.image)
    return cv2.resize(image, capped_size(image.shape, 256), interpolation=cv2.INTER_AREA)


def sweep_tags(hydra_config) -> dict:
    """Tags that group the jobs of one multirun: the sweep id (its folder name), job number, overrides."""
    if hydra_config.mode != RunMode.MULTIRUN:
        return {}
    overrides = ",".join(hydra_config.overrides.task)
    return {"sweep_id": Path(hydra_config.sweep.dir).name, "sweep_job": str(hydra_config.job.num),
            "sweep_overrides": overrides[:5000]}


def limit_threads(hydra_config) -> None:
    """Parallel local jobs (the joblib launcher) share the cores instead of each taking all of them."""
    jobs = hydra_config.launcher.get("n_jobs") if "joblib" in str(hydra_config.launcher.get("_target_")) else None
    if not jobs:
        return
    cores = len(os.sched_getaffinity(0))
    jobs = cores if jobs < 0 else jobs
    threads = max(1, cores // jobs)
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # a reused worker process: already set by its first job
        pass


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> float:
    hydra_config = HydraConfig.get()
    multirun = hydra_config.mode == RunMode.MULTIRUN
    sigterm_as_interrupt()  # again: a launcher's worker process calls this task without run_app
    limit_threads(hydra_config)
    try:
        refuse_overridden_smoke_trainer(cfg.trainer, hydra_config.runtime.choices, list(hydra_config.overrides.task))
        return run_job(cfg, Path(hydra_config.runtime.output_dir), sweep_tags(hydra_config),
                       list(hydra_config.overrides.task)).objective
    except (TrainingDiverged, ServerLost) as exc:
        failed = f"run {mlflow.last_active_run().info.run_id} FAILED: " if isinstance(exc, TrainingDiverged) else ""
        print(f"error: {failed}{exc}", file=sys.stderr)
        if multirun:
            raise  # Hydra records the job as failed and the sweep goes on
        sys.exit(SERVER_LOST if isinstance(exc, ServerLost) else INTERNAL_ERROR)
    except KeyboardInterrupt as exc:
        sys.exit(interrupted(exc))


if __name__ == "__main__":
    run_app(main)
