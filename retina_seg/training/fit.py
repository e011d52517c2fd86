"""Compile and fit: the optimizer, the callbacks that keep the best epoch, and a readable epoch log."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import List

import pandas as pd
import tensorflow as tf

from retina_seg.config import LossConfig, Strategy, TrainerConfig
from retina_seg.model.losses import build_loss, build_metrics
from retina_seg.model.precision import Resolved, loss_scaled
from retina_seg.training.callbacks import DivergenceGuard, EpochLog, TimeLimit
from retina_seg.training.validation import Validation

OPTIMIZERS = {
    "adam": tf.keras.optimizers.Adam,
    "adamw": tf.keras.optimizers.AdamW,
    "sgd": tf.keras.optimizers.SGD,
    "rmsprop": tf.keras.optimizers.RMSprop,
}


class TrainingDiverged(RuntimeError):
    """The loss became NaN, infinite or exploded, or validation ROC AUC stayed at chance; the run fails rather
    than logging a broken model as FINISHED."""


@dataclass
class FitOutputs:
    """Where fit writes: best-epoch weights (.h5) and the per-epoch history (.csv)."""

    weights: Path
    history: Path


def distribution_strategy(trainer: TrainerConfig) -> tf.distribute.Strategy:
    """`mirrored`: one replica per device in trainer.devices (default: every GPU, else every logical CPU);
    the batch size is global and split across replicas."""
    if trainer.strategy is not Strategy.mirrored:
        return tf.distribute.get_strategy()
    devices = list(trainer.devices) or [d.name for d in tf.config.list_logical_devices("GPU")] or [
        d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices=devices)


def compile_model(model: tf.keras.Model, trainer: TrainerConfig, loss: LossConfig,
                  precision: Resolved | None = None) -> None:
    """Optimizer (loss-scaled for float16), the weighted loss and the tracked metrics; all of them read the
    model's float32 output, whatever precision its layers compute in."""
    optimizer = OPTIMIZERS[trainer.optimizer.value](learning_rate=trainer.lr)
    if precision is not None:
        optimizer = loss_scaled(optimizer, precision)
    model.compile(optimizer=optimizer, loss=build_loss(loss), metrics=build_metrics(), run_eagerly=trainer.run_eagerly)


def fit(model: tf.keras.Model, train: tf.data.Dataset, validation: Validation, steps_per_epoch: int,
        trainer: TrainerConfig, outputs: FitOutputs, extra_callbacks: List[tf.keras.callbacks.Callback],
        done: pd.DataFrame | None = None, verbose: bool = False) -> pd.DataFrame:
    """Train, scoring every epoch with `validation`, then restore the best epoch's weights; returns the history
    (one row per epoch).
    Resuming, `done` is the history of the epochs already trained (the model holds the best of their
    weights, `outputs` hold their files): epochs continue after them and the history is appended to.
    The terminal gets EpochLog's one line per epoch; `verbose` adds Keras' own progress output."""
    mode = trainer.monitor_mode.value
    guard = DivergenceGuard(trainer.divergence_patience)
    best = None if done is None or done.empty else float(done[trainer.monitor].agg(mode))
    callbacks = [
        validation,  # first: the callbacks after it read the validation scores it adds to the epoch's logs
        tf.keras.callbacks.ModelCheckpoint(str(outputs.weights), monitor=trainer.monitor, mode=mode,
                                           save_best_only=True, save_weights_only=True, initial_value_threshold=best),
        tf.keras.callbacks.EarlyStopping(monitor=trainer.monitor, mode=mode,
                                         patience=trainer.early_stopping_patience),
        tf.keras.callbacks.ReduceLROnPlateau(monitor=trainer.monitor, mode=mode, factor=trainer.reduce_lr_factor,
                                             patience=trainer.reduce_lr_patience),
        tf.keras.callbacks.CSVLogger(str(outputs.history), append=done is not None),
        guard,
        EpochLog(trainer.epochs),
        *([TimeLimit(trainer.time_limit_minutes)] if trainer.time_limit_minutes else []),
        *extra_callbacks,
    ]
    model.fit(train, epochs=trainer.epochs, steps_per_epoch=steps_per_epoch, callbacks=callbacks,
              initial_epoch=0 if done is None else len(done),
              verbose=(1 if sys.stdout.isatty() else 2) if verbose else 0)
    if guard.reason:
        raise TrainingDiverged(guard.reason)
    if not outputs.weights.exists():
        raise TrainingDiverged(f"no epoch gave a finite {trainer.monitor}; lower trainer.lr")
    model.load_weights(str(outputs.weights))
    return pd.read_csv(outputs.history)
