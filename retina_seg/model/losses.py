"""The training objective as a weighted sum of segmentation_models losses, and the tracked metrics."""

from __future__ import annotations

import segmentation_models as sm

from retina_seg.config import LossConfig

LOSS_TERMS = {
    "dice": sm.losses.DiceLoss,
    "focal": sm.losses.BinaryFocalLoss,
    "bce": sm.losses.BinaryCELoss,
    "jaccard": sm.losses.JaccardLoss,
}


def build_loss(cfg: LossConfig):
    """sum(weight * term) over the terms with a weight > 0 (validation guarantees at least one)."""
    total = None
    for name, weight in cfg.weights().items():
        if weight > 0:
            term = weight * LOSS_TERMS[name]()
            total = term if total is None else total + term
    return total


def build_metrics():
    """IoU and F-score at threshold 0.5; Keras logs them as `iou_score` and `f1-score` (`val_` on validation)."""
    return [sm.metrics.IOUScore(threshold=0.5), sm.metrics.FScore(threshold=0.5)]
