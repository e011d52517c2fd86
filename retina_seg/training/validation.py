"""Validation during training: the scores that choose the best epoch, drive the learning-rate schedule and early
stopping, and tell a model that learns slowly from one that does not learn at all.

Keras' own validation reports the loss and batch-averaged scores at 0.5; a rare-class, multi-label model
needs more: per channel, the area under the precision-recall curve (what the IDRiD challenge scores)
and under the ROC curve, over all validation pixels pooled. One pass of the model over a fixed
validation set (drawn once, see `data.pipeline.validation_set`) gives all of them, counted in histograms
of the probabilities (inference.metrics.PooledCurve), so it costs a forward pass and a few bincounts.
"""

from __future__ import annotations

import math
import time

import numpy as np
import tensorflow as tf

from retina_seg.data.pipeline import to_model_input
from retina_seg.inference.metrics import PooledCurve, scored_channels


def validation_scores(model: tf.keras.Model, images: np.ndarray, masks: np.ndarray, channels: list[str],
                      batch_size: int) -> dict:
    """Keras-style `val_` logs of `model` on uint8 `images` (N, H, W, 3) and `masks` (N, H, W, C):
    `val_loss` (the training loss), `val_f1-score` and `val_iou_score` (pixels pooled at 0.5, mean over
    channels), `val_auroc` (mean over channels), `val_aupr_<channel>` (lower case) and `val_maupr` (their mean
    over the challenge lesions, or over every channel; see `scored_channels`)."""
    curves = [PooledCurve(0.5) for _ in channels]
    losses, weights = [], []
    for start in range(0, len(images), batch_size):
        batch = to_model_input(images[start:start + batch_size])
        truth = masks[start:start + batch_size].astype(np.float32)
        prob = model(batch, training=False)
        losses.append(float(model.loss(tf.constant(truth), prob)))
        weights.append(len(batch))
        prob = prob.numpy()
        if not np.isfinite(prob).all():  # diverged weights: nothing to score (the guard reports the loss)
            return dict.fromkeys(["val_loss", "val_f1-score", "val_iou_score", "val_auroc", "val_maupr"], math.nan)
        for c, curve in enumerate(curves):
            curve.add(truth[..., c].ravel() > 0, prob[..., c].ravel())
    scores = {"val_loss": float(np.average(losses, weights=weights)),
              "val_f1-score": _mean([curve.f1() for curve in curves]),
              "val_iou_score": _mean([curve.iou() for curve in curves]),
              "val_auroc": _mean([curve.roc_auc() for curve in curves])}
    aupr = {channel: curve.average_precision() for channel, curve in zip(channels, curves, strict=True)}
    if len(channels) > 1:
        scores.update({f"val_aupr_{channel.lower()}": value for channel, value in aupr.items()})
    scores["val_maupr"] = _mean([aupr[c] for c in scored_channels(channels)])
    return scores


def _mean(values: list[float]) -> float:
    """Mean over the channels where the score is defined (a channel absent from validation has none)."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


class Validation(tf.keras.callbacks.Callback):
    """Adds `validation_scores` to the epoch's logs, before any other callback reads them (it must come first
    in the list: Keras hands every callback the same logs), and `validation_seconds`, its own cost."""

    def __init__(self, images: np.ndarray, masks: np.ndarray, channels: list[str], batch_size: int):
        super().__init__()
        self.images, self.masks, self.channels, self.batch_size = images, masks, channels, batch_size

    def on_epoch_end(self, epoch, logs=None):
        started = time.perf_counter()
        logs.update(validation_scores(self.model, self.images, self.masks, self.channels, self.batch_size))
        logs["validation_seconds"] = time.perf_counter() - started
