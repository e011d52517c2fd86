"""Segmentation metrics the way retinal papers report them: inside the field of view, per image, then mean and sd.

The binarisation threshold is chosen on the validation split (the one maximising pooled F1) and
then applied to test; test metrics are also reported at 0.5. The threshold-free metrics come from scikit-learn;
the thresholded ones from the confusion matrix's counts, with scikit-learn's definitions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    precision_score,
    roc_auc_score,
)

from retina_seg.data.loading import Arrays

THRESHOLD_METRICS = ("f1", "iou", "sensitivity", "specificity", "accuracy", "balanced_accuracy")
RANKING_METRICS = ("auc", "aupr", "f1_trivial")
FIXED_THRESHOLD = 0.5


def _fov_pixels(prob: np.ndarray, truth: np.ndarray, fov: np.ndarray):
    return truth[fov].astype(np.uint8), prob[fov]


def threshold_metrics(y_true: np.ndarray, y_prob: np.ndarray, threshold: float) -> dict:
    """Metrics of the binarised prediction; NaN where undefined (e.g. F1 with no foreground at all).

    Computed from the four counts of the confusion matrix, with scikit-learn's definitions and its NaN for
    an empty denominator (tests/inference/test_metrics.py holds them equal): its scorers each re-validate and
    re-count a 12-megapixel IDRiD image, a second per image and threshold."""
    truth, predicted = y_true.astype(bool), y_prob >= threshold
    tp = np.count_nonzero(truth & predicted)
    fn = np.count_nonzero(truth) - tp
    fp = np.count_nonzero(predicted) - tp
    tn = truth.size - tp - fn - fp
    sensitivity, specificity = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
    f1 = _f1(tp, fp, fn)
    return {
        "f1": f1,
        "iou": f1 / (2 - f1),  # IoU = Dice / (2 - Dice), exactly; keeps F1's NaN when there is no foreground
        "sensitivity": sensitivity,
        "specificity": specificity,
        "accuracy": _ratio(tp + tn, truth.size),
        "balanced_accuracy": (sensitivity + specificity) / 2,  # NaN unless both classes are present
    }


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else float("nan")


def _f1(tp: int, fp: int, fn: int) -> float:
    return _ratio(2 * tp, 2 * tp + fp + fn)


def ranking_metrics(y_true: np.ndarray, y_prob: np.ndarray) -> dict:
    """Threshold-free metrics of the probability map; NaN when the image has a single class."""
    nan = float("nan")
    positives = np.count_nonzero(y_true)
    both = 0 < positives < y_true.size
    return {
        "auc": roc_auc_score(y_true, y_prob) if both else nan,
        "aupr": average_precision_score(y_true, y_prob) if both else nan,
        # the F1 of calling every FOV pixel foreground: the floor a useful model must clear
        "f1_trivial": _f1(positives, y_true.size - positives, 0),
    }


def choose_thresholds(probs: list, arrays: Arrays, channels: list[str]) -> dict[str, float]:
    """Per channel, the threshold maximising F1 over all validation FOV pixels pooled (0.5 if the
    channel has no foreground in validation)."""
    thresholds = {}
    for c, channel in enumerate(channels):
        pairs = [_fov_pixels(p[..., c], m[..., c] > 0, f) for p, m, f in zip(probs, arrays.masks, arrays.fov,
                                                                            strict=True)]
        y_true = np.concatenate([t for t, _ in pairs])
        y_prob = np.concatenate([p for _, p in pairs])
        if not y_true.any():
            thresholds[channel] = FIXED_THRESHOLD
            continue
        precision, recall, cuts = precision_recall_curve(y_true, y_prob)
        f1 = 2 * precision[:-1] * recall[:-1] / np.maximum(precision[:-1] + recall[:-1], 1e-12)
        thresholds[channel] = float(cuts[int(np.argmax(f1))])
    return thresholds


def evaluate(probs: list, arrays: Arrays, channels: list[str], thresholds: dict[str, float]):
    """Per-image table and flat summary. Summary keys: `test_<metric>` at the validation threshold
    (mean over images and channels), `test_<metric>_sd` (sd over images), `test_<metric>_<channel>`
    for several channels, `test_<metric>_at_0.5`, and `threshold` (`threshold_<channel>`)."""
    rows = []
    for index, name in enumerate(arrays.names):
        for c, channel in enumerate(channels):
            y_true, y_prob = _fov_pixels(probs[index][..., c], arrays.masks[index][..., c] > 0, arrays.fov[index])
            at_fixed = threshold_metrics(y_true, y_prob, FIXED_THRESHOLD)
            rows.append({"image": name, "channel": channel, "threshold": thresholds[channel],
                         **threshold_metrics(y_true, y_prob, thresholds[channel]),
                         **ranking_metrics(y_true, y_prob),
                         **{f"{key}_at_{FIXED_THRESHOLD}": value for key, value in at_fixed.items()}})
    per_image = pd.DataFrame(rows)
    return per_image, summarize(per_image, channels, thresholds)


def summarize(per_image: pd.DataFrame, channels: list[str], thresholds: dict[str, float]) -> dict:
    """The flat summary of a per-image table (see `evaluate`); also used for tables pooled over folds."""
    summary = {}
    metrics = [*THRESHOLD_METRICS, *RANKING_METRICS, *(f"{m}_at_{FIXED_THRESHOLD}" for m in THRESHOLD_METRICS)]
    for metric in metrics:
        summary[f"test_{metric}"] = float(per_image[metric].mean())
        summary[f"test_{metric}_sd"] = float(per_image.groupby("image")[metric].mean().std(ddof=0))
        if len(channels) > 1:
            for channel, value in per_image.groupby("channel")[metric].mean().items():
                summary[f"test_{metric}_{channel}"] = float(value)
    if len(channels) == 1:
        summary["threshold"] = thresholds[channels[0]]
    else:
        summary.update({f"threshold_{channel}": value for channel, value in thresholds.items()})
    return summary


def observer_metrics(arrays: Arrays, second: dict) -> pd.DataFrame:
    """The second human observer scored like a model against the reference truth, per image inside the
    FOV (`second`: image name -> binary (H, W) mask, first channel only): the reference row of a report."""
    rows = []
    for index, name in enumerate(arrays.names):
        if name not in second:
            continue
        y_true, y_obs = _fov_pixels(second[name].astype(np.float32), arrays.masks[index][..., 0] > 0,
                                    arrays.fov[index])
        rows.append({"image": name, **threshold_metrics(y_true, y_obs, FIXED_THRESHOLD),
                     "precision": precision_score(y_true, y_obs >= FIXED_THRESHOLD, zero_division=np.nan)})
    return pd.DataFrame(rows)


CHALLENGE_LESIONS = ("MA", "HE", "EX", "SE")  # IDRiD sub-challenge 1: test_maupr is their mean
PR_BINS = 2**16


class PooledCurve:
    """Pixels of one channel pooled over images, counted per quantised probability (PR_BINS levels), so
    millions of pixels per image cost a histogram, not a sort. Average precision from these counts equals
    scikit-learn's `average_precision_score` on the quantised probabilities."""

    def __init__(self, threshold: float, bins: int = PR_BINS):
        self.threshold, self.bins = threshold, bins
        self.positives = np.zeros(bins, np.int64)
        self.negatives = np.zeros(bins, np.int64)
        self.tp = self.fp = self.fn = 0

    def add(self, y_true: np.ndarray, y_prob: np.ndarray) -> None:
        levels = np.rint(np.clip(y_prob, 0, 1) * (self.bins - 1)).astype(np.int64)
        self.positives += np.bincount(levels[y_true], minlength=self.bins)
        self.negatives += np.bincount(levels[~y_true], minlength=self.bins)
        called = y_prob >= self.threshold
        self.tp += int(np.count_nonzero(called & y_true))
        self.fp += int(np.count_nonzero(called & ~y_true))
        self.fn += int(np.count_nonzero(~called & y_true))

    def average_precision(self) -> float:
        """sum over thresholds, high to low, of (recall gained) x precision; NaN without any positive."""
        seen = (self.positives + self.negatives)[::-1] > 0
        tp = np.cumsum(self.positives[::-1])[seen]
        fp = np.cumsum(self.negatives[::-1])[seen]
        if not len(tp) or tp[-1] == 0:
            return float("nan")
        recall = tp / tp[-1]
        return float(np.sum(np.diff(recall, prepend=0.0) * tp / (tp + fp)))

    def roc_auc(self) -> float:
        """Area under the ROC curve of these counts (ties within a level joined linearly, as scikit-learn does);
        NaN without positives or without negatives."""
        tp = np.concatenate([[0], np.cumsum(self.positives[::-1])])
        fp = np.concatenate([[0], np.cumsum(self.negatives[::-1])])
        if tp[-1] == 0 or fp[-1] == 0:
            return float("nan")
        return float(np.trapezoid(tp / tp[-1], fp / fp[-1]))

    def f1(self) -> float:
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp + self.fn else float("nan")

    def iou(self) -> float:
        return self.tp / (self.tp + self.fp + self.fn) if self.tp + self.fn else float("nan")


def pooled_metrics(probs: list, arrays: Arrays, channels: list[str], thresholds: dict[str, float]) -> dict:
    """The IDRiD challenge's measure: per channel, the AUPR of all test images' FOV pixels pooled, plus the
    pooled F1 at the validation threshold. As in the challenge, whose ground truth for a lesion type only
    covers the images that have it, an image without any pixel of a channel is left out of that channel.
    Keys: `test_aupr_<channel>` and `test_f1_pooled_<channel>` (channel in lower case), `test_maupr` (mean
    AUPR over the challenge lesions MA, HE, EX, SE present) and `test_images_<channel>` (images pooled)."""
    summary = {}
    for c, channel in enumerate(channels):
        curve, images = PooledCurve(thresholds[channel]), 0
        for prob, masks, fov in zip(probs, arrays.masks, arrays.fov, strict=True):
            truth = masks[..., c] > 0
            if truth[fov].any():
                curve.add(truth[fov], prob[..., c][fov])
                images += 1
        name = channel.lower()
        summary.update({f"test_aupr_{name}": curve.average_precision(), f"test_f1_pooled_{name}": curve.f1(),
                        f"test_images_{name}": float(images)})
    lesions = [f"test_aupr_{c.lower()}" for c in channels
               if c in CHALLENGE_LESIONS and summary[f"test_images_{c.lower()}"] > 0]
    if lesions:
        summary["test_maupr"] = float(np.mean([summary[key] for key in lesions]))
    return summary


def scored_channels(channels: list[str]) -> list[str]:
    """The channels a mean AUPR averages: the challenge lesions among them (IDRiD scores MA, HE, EX, SE, not
    the optic disc), else every channel."""
    return [c for c in channels if c in CHALLENGE_LESIONS] or list(channels)
