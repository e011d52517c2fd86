"""The training objective as a weighted sum of segmentation_models losses, and the tracked metrics."""

from __future__ import annotations

import numpy as np
import segmentation_models as sm
import tensorflow as tf

from retina_seg.config import LossConfig


class WeightedBCELoss(sm.base.Loss):
    """Binary cross-entropy per channel, a foreground pixel of channel c counting `positive_weights[c]`
    times a background one, channels weighted by `class_weights` (mean weight 1 keeps the scale of plain BCE)."""

    def __init__(self, class_weights=None, positive_weights=None):
        super().__init__(name="weighted_bce_loss")
        self.class_weights = np.asarray(class_weights if class_weights else 1.0, np.float32)
        self.positive_weights = np.asarray(positive_weights if positive_weights else 1.0, np.float32)

    def __call__(self, gt, pr):
        pr = tf.clip_by_value(pr, 1e-7, 1 - 1e-7)
        per_pixel = -(self.positive_weights * gt * tf.math.log(pr) + (1 - gt) * tf.math.log(1 - pr))
        return tf.reduce_mean(per_pixel * self.class_weights)


def build_loss(cfg: LossConfig):
    """sum(weight * term) over the terms with a weight > 0 (validation guarantees at least one)."""
    weights = cfg.class_weights or None
    terms = {
        "dice": lambda: sm.losses.DiceLoss(class_weights=weights),
        "focal": sm.losses.BinaryFocalLoss,
        "bce": lambda: WeightedBCELoss(weights, cfg.positive_weights),
        "jaccard": lambda: sm.losses.JaccardLoss(class_weights=weights),
    }
    total = None
    for name, weight in cfg.weights().items():
        if weight > 0:
            term = weight * terms[name]()
            total = term if total is None else total + term
    return total


def build_metrics():
    """IoU and F-score at threshold 0.5; Keras logs them as `iou_score` and `f1-score` (`val_` on validation)."""
    return [sm.metrics.IOUScore(threshold=0.5), sm.metrics.FScore(threshold=0.5)]
