"""The IDRiD challenge measure: AUPR of all test images' pixels pooled, images without a lesion type left out."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, f1_score

from retina_seg.data.loading import Arrays
from retina_seg.inference.metrics import PR_BINS, PooledCurve, pooled_metrics

CHANNELS = ["MA", "HE", "EX", "SE"]


def on_grid(rng, shape):
    """Probabilities that are exact quantisation levels, so the histogram loses nothing."""
    return rng.integers(0, PR_BINS, shape) / (PR_BINS - 1)


def test_pooled_curve_equals_sklearn_on_a_hand_built_case():
    truth = np.array([1, 0, 1, 0, 0, 1, 0, 0], bool)
    prob = np.array([0.9, 0.8, 0.8, 0.3, 0.1, 0.3, 0.0, 0.95])
    curve = PooledCurve(threshold=0.5)
    curve.add(truth[:5], prob[:5])
    curve.add(truth[5:], prob[5:])
    # by hand: thresholds 0.95 (tp 0 fp 1), 0.9 (1, 1), 0.8 (2, 2), 0.3 (3, 3), ...: AP = 1/3*1/2 + 1/3*1/2 + 1/3*1/2
    assert curve.average_precision() == pytest.approx(0.5, abs=1e-4)
    assert curve.average_precision() == pytest.approx(average_precision_score(truth, prob), abs=1e-4)
    assert curve.f1() == pytest.approx(f1_score(truth, prob >= 0.5))


def test_pooled_curve_equals_sklearn_on_many_pixels_with_ties():
    rng = np.random.default_rng(0)
    truth = rng.random(50_000) < 0.01
    prob = np.round(np.clip(on_grid(rng, truth.shape) * 0.7 + truth * 0.3, 0, 1) * 200) / 200  # many ties
    curve = PooledCurve(threshold=0.4)
    for part in np.array_split(np.arange(len(truth)), 7):
        curve.add(truth[part], prob[part])
    assert curve.average_precision() == pytest.approx(average_precision_score(truth, prob), rel=1e-3)


def test_images_without_a_lesion_are_left_out_of_that_lesion_and_maupr_is_the_mean():
    rng = np.random.default_rng(1)
    masks, probs = [], []
    for index in range(3):
        m = (rng.random((20, 30, 4)) < 0.05).astype(np.uint8)
        if index == 2:
            m[..., 3] = 0  # no soft exudate in the third image
        masks.append(m)
        probs.append(on_grid(rng, (20, 30, 4)).astype(np.float32))
    probs[2][..., 3] = 1.0  # confident false positives there must not count against SE
    fov = [np.ones((20, 30), bool) for _ in masks]
    fov[0][:5] = False  # pixels outside the field of view do not count either
    arrays = Arrays(images=[np.zeros((20, 30, 3), np.uint8)] * 3, masks=masks, fov=fov, names=["a", "b", "c"])
    summary = pooled_metrics(probs, arrays, CHANNELS, {c: 0.5 for c in CHANNELS})
    for c, name in enumerate(CHANNELS):
        used = [0, 1] if name == "SE" else [0, 1, 2]
        truth = np.concatenate([masks[i][..., c][fov[i]] for i in used])
        prob = np.concatenate([probs[i][..., c][fov[i]] for i in used])
        assert summary[f"test_aupr_{name.lower()}"] == pytest.approx(average_precision_score(truth, prob), abs=1e-4)
        assert summary[f"test_f1_pooled_{name.lower()}"] == pytest.approx(f1_score(truth, prob >= 0.5))
        assert summary[f"test_images_{name.lower()}"] == len(used)
    assert summary["test_maupr"] == pytest.approx(np.mean([summary[f"test_aupr_{c.lower()}"] for c in CHANNELS]))


def test_maupr_covers_only_the_challenge_lesions():
    masks = [np.zeros((8, 8, 2), np.uint8)]
    masks[0][2, 2] = 1
    arrays = Arrays(images=[np.zeros((8, 8, 3), np.uint8)], masks=masks, fov=[np.ones((8, 8), bool)], names=["a"])
    prob = np.zeros((8, 8, 2), np.float32)
    prob[2, 2] = 1
    summary = pooled_metrics([prob], arrays, ["EX", "OD"], {"EX": 0.5, "OD": 0.5})
    assert summary["test_aupr_od"] == 1.0 and summary["test_maupr"] == summary["test_aupr_ex"] == 1.0
    empty = Arrays(images=arrays.images, masks=[np.zeros((8, 8, 1), np.uint8)], fov=arrays.fov, names=["a"])
    assert math.isnan(pooled_metrics([prob[..., :1]], empty, ["MA"], {"MA": 0.5})["test_aupr_ma"])


def test_maupr_is_the_mean_of_the_lesion_types_the_test_images_have():
    """A test split without any soft exudate (one image, as a smoke run has) has no SE AUPR: the mean is over the
    types it does have, not NaN (a NaN metric is never logged, so the run had no test_maupr at all)."""
    masks = [np.zeros((8, 8, 2), np.uint8)]
    masks[0][2, 2, 0] = 1  # exudate only
    arrays = Arrays(images=[np.zeros((8, 8, 3), np.uint8)], masks=masks, fov=[np.ones((8, 8), bool)], names=["a"])
    prob = np.zeros((8, 8, 2), np.float32)
    prob[2, 2, 0] = 1
    summary = pooled_metrics([prob], arrays, ["EX", "SE"], {"EX": 0.5, "SE": 0.5})
    assert math.isnan(summary["test_aupr_se"]) and summary["test_images_se"] == 0
    assert summary["test_maupr"] == summary["test_aupr_ex"] == 1.0
