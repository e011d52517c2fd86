"""Metrics inside the field of view, checked against cases small enough to count by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, recall_score

from retina_seg.data.loading import Arrays
from retina_seg.inference.metrics import choose_thresholds, evaluate, ranking_metrics, threshold_metrics


def image_metrics(prob, truth, fov, threshold):
    """The per-image row `evaluate` reports for a single-channel image (H, W)."""
    arrays = Arrays(images=[np.zeros((*prob.shape, 3), np.uint8)], masks=[truth[..., None].astype(np.uint8)],
                    fov=[fov], names=["x"])
    per_image, _ = evaluate([prob[..., None]], arrays, ["vessels"], {"vessels": threshold})
    return per_image.iloc[0].to_dict()


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
    assert m["balanced_accuracy"] == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert m["auc"] == pytest.approx(11 / 12)
    # AUPR (average precision): ranked 0.9 0.8 0.7 (hits), 0.6 (miss), 0.4 (hit), 0.2 0.1
    # precision at each hit: 1, 1, 1, 4/5; each hit adds 1/4 recall
    assert m["aupr"] == pytest.approx((1 + 1 + 1 + 4 / 5) / 4)
    assert m["f1_trivial"] == pytest.approx(2 * 4 / (2 * 4 + 3))


@pytest.mark.parametrize("case", ["mixed", "no foreground", "all foreground", "nothing predicted", "all predicted"])
def test_thresholded_metrics_are_scikit_learns(case):
    """The confusion-matrix counts give scikit-learn's figures (the all-foreground F1 too), NaN where its
    denominators are empty."""
    rng = np.random.default_rng(3)
    truth = (rng.random(5000) < 0.1).astype(np.uint8)
    prob = np.clip(truth * 0.4 + rng.random(5000) * 0.7, 0, 1)
    truth = {"no foreground": np.zeros_like(truth), "all foreground": np.ones_like(truth)}.get(case, truth)
    prob = {"nothing predicted": prob * 0.4, "all predicted": prob * 0.1 + 0.9}.get(case, prob)
    predicted = (prob >= 0.5).astype(np.uint8)
    nan = float("nan")
    both = len(np.unique(truth)) == 2
    expected = {"f1": f1_score(truth, predicted, zero_division=nan),
                "sensitivity": recall_score(truth, predicted, zero_division=nan),
                "specificity": recall_score(truth, predicted, pos_label=0, zero_division=nan),
                "accuracy": accuracy_score(truth, predicted),
                "balanced_accuracy": balanced_accuracy_score(truth, predicted) if both else nan}
    got = threshold_metrics(truth, prob, 0.5)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, nan_ok=True), (case, key)
    trivial = ranking_metrics(truth, prob)["f1_trivial"]
    assert trivial == pytest.approx(f1_score(truth, np.ones_like(truth), zero_division=nan), nan_ok=True), case


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
    per_image, summary = evaluate(list(probs), arrays, ["vessels", "MA"], {"vessels": 0.5, "MA": 0.5})
    assert len(per_image) == 4
    assert summary["test_f1_vessels"] == pytest.approx((1.0 + 0.8) / 2)
    assert summary["test_f1_MA"] == pytest.approx(1.0)
    assert summary["test_f1"] == pytest.approx((1.0 + 0.8 + 1.0 + 1.0) / 4)
    # sd over images of the per-image mean over channels: image a 1.0, image b 0.9
    assert summary["test_f1_sd"] == pytest.approx(0.05)
    assert summary["threshold_vessels"] == 0.5 and summary["test_f1_at_0.5"] == summary["test_f1"]


def test_threshold_is_chosen_on_validation_and_changes_test_metrics():
    truth = np.zeros((1, 4, 4, 1), np.uint8)
    truth[0, :2] = 1
    probs = np.full((1, 4, 4, 1), 0.1, np.float32)
    probs[0, :2] = 0.35  # a timid model: every vessel pixel below 0.5, still perfectly ranked
    arrays = Arrays(images=[np.zeros((4, 4, 3), np.uint8)], masks=list(truth), fov=[np.ones((4, 4), bool)],
                    names=["v"])
    thresholds = choose_thresholds(list(probs), arrays, ["vessels"])
    assert 0.1 < thresholds["vessels"] <= 0.35
    _, summary = evaluate(list(probs), arrays, ["vessels"], thresholds)
    assert summary["test_f1"] == pytest.approx(1.0)
    assert summary["test_f1_at_0.5"] == 0.0 and summary["test_sensitivity_at_0.5"] == 0.0  # nothing predicted
    assert summary["threshold"] == thresholds["vessels"]
