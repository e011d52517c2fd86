"""The evaluation stage of a run: thresholds on validation, metrics on test, written where the run logs them.

Prediction goes through the same `Predictor` as `predict`; the per-image table, the summary and an
example figure are written into the run's staging folder, and the summary becomes MLflow metrics.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import cv2
import mlflow
import pandas as pd
from tqdm import tqdm

from retina_seg.data.loading import Arrays, read_mask, warn_thresholded
from retina_seg.inference.drift import image_statistics, record
from retina_seg.inference.metrics import FIXED_THRESHOLD, choose_thresholds, evaluate, observer_metrics, pooled_metrics
from retina_seg.inference.predictor import Predictor
from retina_seg.reporting.figures import plot_examples
from retina_seg.reporting.lesion_figures import plot_lesions
from retina_seg.reporting.result_figures import plot_best_worst, plot_lesion_pr, plot_roc_pr
from retina_seg.tracking import artifacts

log = logging.getLogger(__name__)


def predict_split(predictor: Predictor, arrays: Arrays, label: str) -> list:
    return [predictor(image) for image in tqdm(arrays.images, desc=f"predicting {label}", unit="image",
                                               disable=None, leave=False)]


def evaluate_model(predictor: Predictor, splits: dict, channels: list[str], staging: Path,
                   thresholds: dict | None = None, second: dict | None = None, lesions: bool = False,
                   extra: dict | None = None, source_thresholds: dict | None = None) -> dict:
    """Choose thresholds on validation (unless given), evaluate test, write metrics/ and the figures
    into `staging`; returns the summary (MLflow metric names). `second`: image name -> the second human
    observer's mask file, scored against the same truth as a reference (`metrics/second_observer.csv`).
    `lesions`: also the IDRiD challenge's pooled AUPR per lesion type and one overlay figure per test
    image in lesions/. `extra`: figures kept beside the test metrics in the summary (a training run's FOV width,
    the scale its model predicts at). `source_thresholds`: the evaluated run's own validation thresholds, to report
    test F1 at them as well (`test_f1_at_source_threshold`) when another dataset's validation split chose
    `thresholds`. Thresholds chosen here also leave the validation images' drift statistics
    (`metrics/validation_statistics.json`), from the same validation predictions."""
    if thresholds is None:
        validation = splits["val"]
        val_probs = predict_split(predictor, validation, "validation")
        thresholds = choose_thresholds(val_probs, validation, channels)
        write_validation_statistics(staging, val_probs, validation, channels, thresholds)
    test = splits["test"]
    started = time.perf_counter()
    probs = predict_split(predictor, test, "test")
    per_image, summary = evaluate(probs, test, channels, thresholds)
    summary["inference_ms_per_image"] = 1000 * (time.perf_counter() - started) / len(test)
    if source_thresholds is not None:
        at_source = evaluate(probs, test, channels, source_thresholds)[1]
        summary["test_f1_at_source_threshold"] = at_source["test_f1"]
        summary.update({f"source_{key}": value for key, value in at_source.items() if key.startswith("threshold")})
    if lesions:
        summary.update(pooled_metrics(probs, test, channels, thresholds))
    summary.update(extra or {})
    write_metrics(staging, per_image, summary)
    observer = observer_metrics(test, _read_observer(test, second or {}))
    if len(observer):
        observer.to_csv(staging / artifacts.SECOND_OBSERVER, index=False)
    plot_examples(test.images, test.masks, probs, test.fov, test.names, [thresholds[c] for c in channels],
                  per_image.groupby("image")["f1"].mean().to_dict(), staging / artifacts.TEST_EXAMPLES)
    (staging / artifacts.ROC_PR).parent.mkdir(exist_ok=True)
    plot_roc_pr(probs, test, channels, staging / artifacts.ROC_PR, observer)
    plot_best_worst(probs, test, per_image, thresholds, staging / artifacts.BEST_WORST)
    if lesions:
        for image, truth, prob, name in zip(test.images, test.masks, probs, test.names, strict=True):
            plot_lesions(image, truth, prob, channels, thresholds, name, staging / artifacts.LESIONS / f"{name}.png")
        pooled = {c: round(summary[f"test_aupr_{c.lower()}"], 4) for c in channels}
        plot_lesion_pr(probs, test, channels, pooled, staging / artifacts.LESION_PR)
        log.info("test AUPR pooled over images (IDRiD protocol) %s, mAUPR %.4f", pooled,
                 summary.get("test_maupr", math.nan))
    log.info("test F1 %.4f (threshold %s chosen on validation; at 0.5: %.4f), AUC %.4f, all-foreground F1 %.4f",
             summary["test_f1"], {k: round(v, 3) for k, v in thresholds.items()}, summary["test_f1_at_0.5"],
             summary["test_auc"], summary["test_f1_trivial"])
    return summary


def write_metrics(staging: Path, per_image: pd.DataFrame, summary: dict) -> None:
    """The per-image table and the summary, where a run keeps them."""
    (staging / artifacts.PER_IMAGE).parent.mkdir(parents=True, exist_ok=True)
    per_image.to_csv(staging / artifacts.PER_IMAGE, index=False)
    (staging / artifacts.SUMMARY).write_text(json.dumps(summary, indent=2))


def write_validation_statistics(staging: Path, probs: list, arrays: Arrays, channels: list[str],
                                thresholds: dict) -> None:
    """Each validation image's field-of-view fraction and predicted foreground fractions at `thresholds`
    (inference/drift.py), what the served model's live figures are compared with."""
    levels = [thresholds[c] for c in channels]
    images = [image_statistics(prob >= levels, fov, channels) for prob, fov in zip(probs, arrays.fov, strict=True)]
    (staging / artifacts.VALIDATION_STATISTICS).parent.mkdir(parents=True, exist_ok=True)
    (staging / artifacts.VALIDATION_STATISTICS).write_text(
        json.dumps(record(list(arrays.names), images, channels, thresholds), indent=1))


def log_summary(summary: dict, log_metrics=mlflow.log_metrics) -> None:
    """The summary as single-value MLflow metrics, each logged once; the secondary figures (metrics at
    the fixed 0.5 threshold but F1, and their sd) stay in metrics/summary.json, out of the charts."""
    secondary = [key for key in summary if f"_at_{FIXED_THRESHOLD}" in key and not key.startswith(
        f"test_f1_at_{FIXED_THRESHOLD}")] + [f"test_f1_at_{FIXED_THRESHOLD}_sd", "test_f1_trivial_sd"]
    log_metrics({key: value for key, value in summary.items() if key not in secondary and math.isfinite(value)})


def _read_observer(test: Arrays, second: dict) -> dict:
    """The second observer's masks of the test images, at the (possibly capped) size of their truth."""
    masks, thresholded = {}, []
    for index, name in enumerate(test.names):
        if name in second:
            shape = test.masks[index].shape[:2]
            mask = read_mask(second[name], thresholded)
            if mask.shape != shape:
                mask = cv2.resize(mask, shape[::-1], interpolation=cv2.INTER_NEAREST)
            masks[name] = mask
    warn_thresholded(thresholded, len(masks))
    return masks
