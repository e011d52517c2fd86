"""`python -m retina_seg.run [overrides]`: compose, validate, train, evaluate, and log one MLflow run.

The runner only wires the stages together; each stage gets the part of the config it needs.
Everything cheap that can reject the config (schema, tracking store, data files, model build)
runs before the MLflow run starts, so bad input leaves no half-written run behind. (The package's
__init__ has already selected the Keras 2 stack before TensorFlow is imported here.)
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import albumentations as A
import hydra
import mlflow
import tensorflow as tf
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from retina_seg.augment import build_augmentation
from retina_seg.config import Config, ConfigError, Sampling, validate
from retina_seg.data import DataError, load_splits, resize_arrays
from retina_seg.evaluate import evaluate_model, log_summary
from retina_seg.infer import Predictor
from retina_seg.model import build_model
from retina_seg.pipeline import evaluation_dataset, training_dataset
from retina_seg.plots import plot_history
from retina_seg.track import MlflowMetrics, check_tracking, flatten, git_commit, log_staged, tracked_run
from retina_seg.train import FitOutputs, compile_model, fit

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    run_id: str
    model: tf.keras.Model
    metrics: dict
    objective: float  # best value of trainer.monitor on validation: what a sweeper optimizes


def run_job(cfg: DictConfig, workdir: Path) -> JobResult:
    """One training job from a composed config; files are staged in `workdir/artifacts` and logged."""
    config: Config = validate(cfg)
    check_tracking(config.tracking)
    tf.keras.utils.set_random_seed(config.seed)
    channels = config.data.channels
    splits = load_splits(config.data, config.preprocess, config.seed)
    patches = config.data.sampling is Sampling.patches
    fit_splits = splits if patches else {s: resize_arrays(splits[s], config.image_size) for s in ("train", "val")}
    augmentation = build_augmentation(config.augmentation, config.seed)
    model = build_model(config.backbone.name, config.arch, len(channels), config.image_size, config.encoder_weights,
                        config.batchnorm_momentum, config.preprocess.normalization)
    compile_model(model, config.trainer, config.loss)
    log.info("data %s: %s", config.data.name, {split: len(arrays) for split, arrays in splits.items()})

    staging = workdir / "artifacts"
    staging.mkdir(parents=True, exist_ok=True)
    stem = config.artifact_stem
    (staging / f"{stem}.json").write_text(model.to_json())
    (staging / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    if augmentation is not None:  # the resolved pipeline, every argument spelled out
        A.save(augmentation, str(staging / "augmentation.yaml"), data_format="yaml")
    outputs = FitOutputs(weights=staging / f"{stem}.h5", history=staging / f"{stem}.csv")
    tags = {"backbone": config.backbone.name, "arch": config.arch.name.value, "dataset": config.data.name,
            "task": config.data.task.value, "git_commit": git_commit()}

    with tracked_run(config.tracking, staging, tags) as run:
        mlflow.log_params(flatten(OmegaConf.to_container(cfg, resolve=True)))
        batch = config.trainer.batch_size
        steps = config.trainer.steps_per_epoch or math.ceil(len(splits["train"]) / batch)
        train = training_dataset(fit_splits["train"], batch, config.image_size, patches, config.data.foreground_share,
                                 augmentation, config.seed)
        history = fit(model, train, evaluation_dataset(fit_splits["val"], batch), steps, config.trainer, outputs,
                      [MlflowMetrics()])
        plot_history(history, staging / "curves.png")

        predictor = Predictor(model, config.image_size, config.data.sampling, config.inference)
        summary = evaluate_model(predictor, splits, channels, staging)
        log_summary(summary)
        log_staged(staging)
        mlflow.tensorflow.log_model(model, name="model", keras_model_kwargs={"save_format": "h5"},
                                    pip_requirements=_requirements())
        objective = float(history[config.trainer.monitor].agg(config.trainer.monitor_mode.value))
    return JobResult(run_id=run.info.run_id, model=model, metrics=summary, objective=objective)


def _requirements() -> list[str]:
    """What a serving environment needs to load the logged model (given explicitly: inference is slow)."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("tensorflow", "tf-keras", "segmentation-models", "h5py")]


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    try:
        return run_job(cfg, Path(HydraConfig.get().runtime.output_dir)).objective
    except (ConfigError, DataError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
