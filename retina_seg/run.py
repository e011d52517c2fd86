"""`python -m retina_seg.run [overrides]`: compose, validate, train, evaluate, and log one MLflow run.

The runner only wires the stages together; each stage gets the part of the config it needs.
Everything cheap that can reject the config (schema, tracking store, data files, model build)
runs before the MLflow run starts, so bad input leaves no half-written run behind. (The package's
__init__ has already selected the Keras 2 stack before TensorFlow is imported here.)
With `-m` every job is its own run, tagged with the sweep it belongs to.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import hydra
import mlflow
import tensorflow as tf
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from retina_seg.config import Config, ConfigError, Sampling, validate
from retina_seg.data.augment import build_augmentation
from retina_seg.data.loading import DataError, load_splits, resize_arrays
from retina_seg.data.pipeline import evaluation_dataset, training_dataset
from retina_seg.inference.predictor import Predictor
from retina_seg.model.factory import build_model
from retina_seg.tracking.evaluation import evaluate_model, log_summary
from retina_seg.tracking.exits import USER_ERROR, interrupted, run_app
from retina_seg.tracking.figures import plot_history
from retina_seg.tracking.preflight import preflight
from retina_seg.tracking.recovery import CheckpointArtifacts, fetch_checkpoint, reconcile, resumed_config
from retina_seg.tracking.runs import (
    MlflowMetrics,
    flatten,
    git_commit,
    log_staged,
    sigterm_as_interrupt,
    tracked_run,
)
from retina_seg.training.fit import FitOutputs, TrainingDiverged, compile_model, distribution_strategy, fit

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    run_id: str
    model: tf.keras.Model
    metrics: dict
    objective: float  # best value of trainer.monitor on validation: what a sweeper optimizes


def run_job(cfg: DictConfig, workdir: Path, sweep_tags: dict | None = None, overrides: list[str] = ()) -> JobResult:
    """One training job from a composed config; files are staged in `workdir/artifacts` and logged.
    With `resume=<run id>` the job continues that run (its config, plus key=value `overrides`)."""
    if cfg.get("resume"):
        cfg = resumed_config(cfg, list(overrides))
    config: Config = validate(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    experiment_id = preflight(config, workdir)
    client = MlflowClient(config.tracking.uri)
    for change in reconcile(client, [experiment_id], stale_minutes=None):  # this host's runs whose process died
        log.warning("reconcile: %s", change)
    tf.keras.utils.set_random_seed(config.seed)
    channels = config.data.channels
    splits = load_splits(config.data, config.preprocess, config.seed)
    patches = config.data.sampling is Sampling.patches
    fit_splits = splits if patches else {s: resize_arrays(splits[s], config.image_size) for s in ("train", "val")}
    augmentation = build_augmentation(config.augmentation, config.seed)
    strategy = distribution_strategy(config.trainer)
    with strategy.scope():
        model = build_model(config.backbone.name, config.arch, len(channels), config.image_size,
                            config.encoder_weights, config.batchnorm_momentum, config.preprocess.normalization)
        compile_model(model, config.trainer, config.loss)
    log.info("data %s: %s; %d replica(s)", config.data.name, {s: len(a) for s, a in splits.items()},
             strategy.num_replicas_in_sync)

    staging = workdir / "artifacts"
    staging.mkdir(parents=True, exist_ok=True)
    stem = config.artifact_stem
    (staging / f"{stem}.json").write_text(model.to_json())
    (staging / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
    if augmentation is not None:  # the resolved pipeline, every argument spelled out
        A.save(augmentation, str(staging / "augmentation.yaml"), data_format="yaml")
    outputs = FitOutputs(weights=staging / f"{stem}.h5", history=staging / f"{stem}.csv")
    done = None
    if config.resume:
        done = fetch_checkpoint(client, config.resume, stem, staging)
        model.load_weights(str(outputs.weights))
        log.info("resuming run %s after epoch %d", config.resume, len(done))
    tags = {"backbone": config.backbone.name, "arch": config.arch.name.value, "dataset": config.data.name,
            "task": config.data.task.value, "git_commit": git_commit(), **(sweep_tags or {})}

    name = "-".join([config.backbone.name, config.arch.name.value, config.data.name,
                     *([f"job{sweep_tags['sweep_job']}"] if sweep_tags else [])])
    with tracked_run(config.tracking, staging, tags, run_name=name, run_id=config.resume) as run:
        if not config.resume:  # a resumed run keeps its params; its config.yaml records any override
            mlflow.log_params(flatten(resolved))
        log_staged(staging)  # architecture and config first: with a checkpoint they make a resumable run
        mlflow.log_metrics({"parameters": model.count_params(), "replicas": strategy.num_replicas_in_sync})
        batch = config.trainer.batch_size
        steps = config.trainer.steps_per_epoch or math.ceil(len(splits["train"]) / batch)
        train = training_dataset(fit_splits["train"], batch, config.image_size, patches, config.data.foreground_share,
                                 augmentation, config.seed)
        started = time.perf_counter()
        val = evaluation_dataset(fit_splits["val"], batch, strategy.num_replicas_in_sync)
        history = fit(model, train, val, steps, config.trainer, outputs,
                      [MlflowMetrics(), CheckpointArtifacts(outputs.weights, outputs.history)], done)
        mlflow.log_metric("train_seconds", time.perf_counter() - started)
        plot_history(history, staging / "curves.png")

        predictor = Predictor(model, config.image_size, config.data.sampling, config.inference)
        summary = evaluate_model(predictor, splits, channels, staging)
        log_summary(summary)
        log_staged(staging)
        mlflow.tensorflow.log_model(model, name="model", keras_model_kwargs={"save_format": "h5"},
                                    pip_requirements=_requirements())
        objective = float(history[config.trainer.monitor].agg(config.trainer.monitor_mode.value))
        mlflow.log_metric("objective", objective)
    return JobResult(run_id=run.info.run_id, model=model, metrics=summary, objective=objective)


def _requirements() -> list[str]:
    """What a serving environment needs to load the logged model (given explicitly: inference is slow)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("tensorflow", "tf-keras", "segmentation-models", "h5py")]


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


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    hydra_config = HydraConfig.get()
    multirun = hydra_config.mode == RunMode.MULTIRUN
    sigterm_as_interrupt()
    limit_threads(hydra_config)
    try:
        return run_job(cfg, Path(hydra_config.runtime.output_dir), sweep_tags(hydra_config),
                       list(hydra_config.overrides.task)).objective
    except (ConfigError, DataError) as exc:
        for line in str(exc).splitlines():
            print(f"error: {line}", file=sys.stderr)
        if multirun:
            raise  # Hydra records the job as failed and the sweep goes on
        sys.exit(USER_ERROR)
    except TrainingDiverged as exc:
        print(f"error: run {mlflow.last_active_run().info.run_id} FAILED: {exc}", file=sys.stderr)
        if multirun:
            raise
        sys.exit(1)
    except KeyboardInterrupt as exc:
        sys.exit(interrupted(exc))


if __name__ == "__main__":
    run_app(main)
