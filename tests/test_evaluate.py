"""Metrics inside the field of view, checked against cases small enough to count by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from retina_seg.data import Arrays
from retina_seg.evaluate import evaluate, image_metrics


def test_metrics_count_only_fov_pixels():
    prob = np.array([[0.9, 0.8, 0.2, 0.1],
                     [0.7, 0.4, 0.6, 0.99]])
    truth = np.array([[1, 1, 0, 0],
                      [1, 1, 0, 1]], bool)
    fov = np.array([[1, 1, 1, 1],
                    [1, 1, 1, 0]], bool)  # the last pixel (a confident hit) is outside the FOV
    m = image_metrics(prob, truth, fov, threshold=0.5)
    # inside: tp=3 (0.9, 0.8, 0.7), fn=1 (0.4), fp=1 (0.6), tn=2 (0.2, 0.1)
    assert m["f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    assert m["iou"] == pytest.approx(3 / 5)
    assert m["sensitivity"] == pytest.approx(3 / 4)
    assert m["specificity"] == pytest.approx(2 / 3)
    assert m["accuracy"] == pytest.approx(5 / 7)
    # AUC: of 4 x 3 positive/negative pairs, only (0.4 vs 0.6) is ranked wrongly
    assert m["auc"] == pytest.approx(11 / 12)
    assert m["f1_trivial"] == pytest.approx(2 * 4 / (2 * 4 + 3))


def test_image_without_foreground_has_undefined_f1_and_auc():
    m = image_metrics(np.full((2, 2), 0.1), np.zeros((2, 2), bool), np.ones((2, 2), bool), 0.5)
    assert math.isnan(m["f1"]) and math.isnan(m["auc"])
    assert m["specificity"] == 1.0 and m["accuracy"] == 1.0


def test_summary_is_mean_and_sd_over_images_and_per_channel():
    truth = np.zeros((2, 4, 4, 2), np.uint8)
    truth[0, :2, :, 0] = 1
    truth[1, :, :2, 0] = 1
    truth[:, 0, 0, 1] = 1
    probs = truth.astype(np.float32).copy()
    probs[1, :, 2, 0] = 0.9  # image 1 channel 0: tp 8, fp 4 -> F1 = 16 / 20
    arrays = Arrays(images=np.zeros((2, 4, 4, 3), np.uint8), masks=truth, fov=np.ones((2, 4, 4), bool),
                    names=["a", "b"])
    per_image, summary = evaluate(probs, arrays, ["vessels", "MA"])
    assert len(per_image) == 4
    assert summary["test_f1_vessels"] == pytest.approx((1.0 + 0.8) / 2)
    assert summary["test_f1_MA"] == pytest.approx(1.0)
    assert summary["test_f1"] == pytest.approx((1.0 + 0.8 + 1.0 + 1.0) / 4)
    # sd over images of the per-image mean over channels: image a 1.0, image b 0.9
    assert summary["test_f1_sd"] == pytest.approx(0.05)
