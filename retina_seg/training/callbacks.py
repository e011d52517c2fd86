"""The Keras callbacks of a training run: one log line per epoch, the divergence guard, the time limit, and
the two that hand the run's record on (epoch metrics, and the best checkpoint whenever it improves) to
whatever logs it, so that training never knows where its record goes."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Callable, Dict, List

import tensorflow as tf

log = logging.getLogger(__name__)

CHANCE_AUC = 0.55  # a validation ROC AUC at or below this is no better than guessing
EXPLODED = 10.0  # an epoch's training loss this many times its lowest so far: the optimisation blew up


class EpochLog(tf.keras.callbacks.Callback):
    """One plain line per epoch through `logging`, so the Hydra log file reads like the terminal."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = epochs

    def on_epoch_end(self, epoch, logs=None):
        values = " ".join(f"{key}={value:.4g}" for key, value in (logs or {}).items())
        log.info("epoch %d/%d %s", epoch + 1, self.epochs, values)


class DivergenceGuard(tf.keras.callbacks.Callback):
    """Stops a training that diverges or does not learn; `reason` then says which, with what to try:
    a non-finite batch loss, or an epoch's training loss above EXPLODED times the lowest epoch loss so far,
    stop it at once; validation ROC AUC (`val_auroc`: per channel over all pooled validation pixels, then the
    mean) at chance (<= CHANCE_AUC) for `patience` epochs in a row means it is not learning. ROC AUC is 0.5
    for a model that has learnt nothing whatever the task, the number of channels or how rare a class is;
    a slow start, with every probability still near 0, already ranks lesion pixels above the rest."""

    def __init__(self, patience: int | None):
        super().__init__()
        self.patience, self.at_chance, self.reason, self.lowest = patience, 0, None, math.inf

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss) and self.reason is None:
            self.stop(f"loss became {'NaN' if math.isnan(loss) else 'infinite'} at epoch {self.epoch + 1}; "
                      "lower trainer.lr")

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        loss, auroc = logs.get("loss"), logs.get("val_auroc")
        if loss is not None and math.isfinite(loss):
            if loss > EXPLODED * self.lowest and self.reason is None:
                self.stop(f"training loss exploded at epoch {epoch + 1}: {loss:.4g}, over {EXPLODED:g}x its lowest "
                          f"epoch value {self.lowest:.4g}; lower trainer.lr")
            self.lowest = min(self.lowest, loss)
        self.at_chance = self.at_chance + 1 if auroc is not None and auroc <= CHANCE_AUC else 0
        if self.patience and self.at_chance >= self.patience and self.reason is None:
            self.stop(f"validation ROC AUC {auroc:.3f} (val_auroc: per channel over all validation pixels, then the "
                      f"mean) at chance (<= {CHANCE_AUC}) for {self.at_chance} epoch(s), up to epoch {epoch + 1}: "
                      "the model is not learning; check that the masks match their images (data.root, "
                      "data.lesion_types), then try a lower trainer.lr")

    def stop(self, reason: str) -> None:
        self.reason = reason
        self.model.stop_training = True


class TimeLimit(tf.keras.callbacks.Callback):
    """Stop after a wall-clock budget; the epoch in progress still validates, so the best one is kept."""

    def __init__(self, minutes: float):
        super().__init__()
        self.seconds = minutes * 60

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() - self.start > self.seconds:
            if not self.model.stop_training:
                log.info("time limit of %.1f minutes reached: stopping after this epoch", self.seconds / 60)
            self.model.stop_training = True


class EpochMetrics(tf.keras.callbacks.Callback):
    """Hand on every Keras epoch metric (loss, iou_score, f1-score, their val_ twins) with step = epoch, and
    `learning_rate`: the optimizer's rate during that epoch, read before a schedule changes it; through
    `log_metrics(values, step=epoch)`, which must return at once (the run's Outbox does)."""

    def __init__(self, log_metrics: Callable[..., None]):
        super().__init__()
        self.log_metrics = log_metrics

    def on_epoch_begin(self, epoch, logs=None):
        rate = self.model.optimizer.learning_rate
        if isinstance(rate, tf.keras.optimizers.schedules.LearningRateSchedule):
            rate = rate(self.model.optimizer.iterations)
        self.rate = float(tf.keras.backend.get_value(rate))

    def on_epoch_end(self, epoch, logs=None):
        values = {key: float(value) for key, value in (logs or {}).items() if key != "lr"}
        self.log_metrics({**values, "learning_rate": self.rate}, step=epoch)


class CheckpointLogger(tf.keras.callbacks.Callback):
    """Hand the best weights and the history so far to `log_files(files, tags)` each epoch in which the
    best-epoch checkpoint was rewritten (the monitored metric improved), so a killed run keeps its best
    model; `log_files` returns False when it could not send them (they stay where they are)."""

    def __init__(self, weights: Path, history: Path, log_files: Callable[[List[Path], Dict[str, str]], bool],
                 run_id: str):
        super().__init__()
        self.weights, self.history, self.log_files, self.run_id = weights, history, log_files, run_id

    def _stamp(self):
        return self.weights.stat().st_mtime_ns if self.weights.exists() else None

    def on_train_begin(self, logs=None):
        self.logged = self._stamp()  # resuming: the checkpoint fetched from the run is already logged

    def on_epoch_end(self, epoch, logs=None):
        if self._stamp() == self.logged:
            return
        self.logged = self._stamp()
        if self.log_files([self.weights, self.history], {"checkpoint_epoch": str(epoch + 1)}):
            log.info("checkpoint: epoch %d weights and history logged to run %s", epoch + 1, self.run_id)
