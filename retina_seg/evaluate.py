"""Test metrics the way retinal papers report them: per image, inside the field of view, then mean and sd."""

from __future__ import annotations

import numpy as np
import pandas as pd
import tensorflow as tf
from sklearn.metrics import accuracy_score, f1_score, recall_score, roc_auc_score

from retina_seg.data import Arrays
from retina_seg.pipeline import PAD_MULTIPLE, pad_to_multiple, to_model_input

METRICS = ("f1", "iou", "sensitivity", "specificity", "accuracy", "auc")


def predict_probabilities(model: tf.keras.Model, images: list, batch_size: int) -> list:
    """uint8 RGB images (H, W, 3) -> float32 probabilities (H, W, C) in [0, 1], one per image; images
    are zero-padded to a multiple of 32 and the prediction cropped back."""
    if len({image.shape for image in images}) == 1 and images[0].shape[0] % PAD_MULTIPLE == 0 == \
            images[0].shape[1] % PAD_MULTIPLE:
        return list(model.predict(to_model_input(np.stack(images)), batch_size=batch_size, verbose=0))
    probs = []
    for image in images:
        padded = to_model_input(pad_to_multiple(image)[None])
        probs.append(model.predict(padded, verbose=0)[0, : image.shape[0], : image.shape[1]])
    return probs


def image_metrics(prob: np.ndarray, truth: np.ndarray, fov: np.ndarray, threshold: float) -> dict:
    """Metrics of one channel of one image over the FOV pixels; NaN where a metric is undefined
    (e.g. AUC or F1 of an image with no foreground)."""
    y_true = truth[fov].astype(np.uint8)
    y_prob = prob[fov]
    y_pred = (y_prob >= threshold).astype(np.uint8)
    both = len(np.unique(y_true)) == 2
    nan = float("nan")
    f1 = f1_score(y_true, y_pred, zero_division=nan)
    return {
        "f1": f1,
        "iou": f1 / (2 - f1),  # IoU = Dice / (2 - Dice), exactly; keeps F1's NaN when there is no foreground
        "sensitivity": recall_score(y_true, y_pred, zero_division=nan),
        "specificity": recall_score(y_true, y_pred, pos_label=0, zero_division=nan),
        "accuracy": accuracy_score(y_true, y_pred),
        "auc": roc_auc_score(y_true, y_prob) if both else nan,
        # the F1 of calling every FOV pixel foreground: the floor a useful model must clear
        "f1_trivial": f1_score(y_true, np.ones_like(y_true), zero_division=nan),
    }


def evaluate(probs: list, arrays: Arrays, channels: list[str], threshold: float = 0.5):
    """Per-image table (image, channel, metrics...) and a flat summary {test_f1, test_f1_sd, test_f1_MA, ...}."""
    rows = []
    for index, name in enumerate(arrays.names):
        for c, channel in enumerate(channels):
            metrics = image_metrics(probs[index][..., c], arrays.masks[index][..., c] > 0, arrays.fov[index],
                                    threshold)
            rows.append({"image": name, "channel": channel, **metrics})
    per_image = pd.DataFrame(rows)
    summary = {}
    for metric in (*METRICS, "f1_trivial"):
        summary[f"test_{metric}"] = float(per_image[metric].mean())
        summary[f"test_{metric}_sd"] = float(per_image.groupby("image")[metric].mean().std(ddof=0))
        if len(channels) > 1:
            for channel, value in per_image.groupby("channel")[metric].mean().items():
                summary[f"test_{metric}_{channel}"] = float(value)
    return per_image, summary
