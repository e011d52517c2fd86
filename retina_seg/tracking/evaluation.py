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

import mlflow
from tqdm import tqdm

from retina_seg.data.loading import Arrays
from retina_seg.inference.metrics import choose_thresholds, evaluate
from retina_seg.inference.predictor import Predictor
from retina_seg.tracking.figures import plot_examples

log = logging.getLogger(__name__)


def predict_split(predictor: Predictor, arrays: Arrays, label: str) -> list:
    return [predictor(image) for image in tqdm(arrays.images, desc=f"predicting {label}", unit="image",
                                               disable=None, leave=False)]


def evaluate_model(predictor: Predictor, splits: dict, channels: list[str], staging: Path,
                   thresholds: dict | None = None) -> dict:
    """Choose thresholds on validation (unless given), evaluate test, write metrics/ and the example
    figure into `staging`; returns the summary (MLflow metric names)."""
    if thresholds is None:
        thresholds = choose_thresholds(predict_split(predictor, splits["val"], "validation"), splits["val"], channels)
    test = splits["test"]
    started = time.perf_counter()
    probs = predict_split(predictor, test, "test")
    per_image, summary = evaluate(probs, test, channels, thresholds)
    summary["inference_ms_per_image"] = 1000 * (time.perf_counter() - started) / len(test)
    (staging / "metrics").mkdir(parents=True, exist_ok=True)
    per_image.to_csv(staging / "metrics" / "per_image.csv", index=False)
    (staging / "metrics" / "summary.json").write_text(json.dumps(summary, indent=2))
    plot_examples(test.images, test.masks, probs, test.names, staging / "test_examples.png")
    log.info("test F1 %.4f (threshold %s chosen on validation; at 0.5: %.4f), AUC %.4f, all-foreground F1 %.4f",
             summary["test_f1"], {k: round(v, 3) for k, v in thresholds.items()}, summary["test_f1_at_0.5"],
             summary["test_auc"], summary["test_f1_trivial"])
    return summary


def log_summary(summary: dict) -> None:
    mlflow.log_metrics({key: value for key, value in summary.items() if math.isfinite(value)})
