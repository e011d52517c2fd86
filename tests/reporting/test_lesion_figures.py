"""Lesion overlays, and the evaluation stage of a lesion run: pooled AUPR, per-image CSV and one figure per image."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import numpy as np
import pandas as pd

from retina_seg.config import InferenceConfig, Sampling
from retina_seg.data.loading import Arrays
from retina_seg.evaluation.scoring import evaluate_model
from retina_seg.inference.predictor import Predictor
from retina_seg.reporting.lesion_figures import densest_crop, paint, plot_lesions
from retina_seg.reporting.palette import CLASS_COLOURS, OKABE_ITO, class_colours
from retina_seg.reporting.report import run_sections, write_report
from retina_seg.tracking import artifacts
from tests.conftest import TINY, compose_config
from tests.inference.test_predictor import pointwise_model

CHANNELS = ["MA", "EX"]


def lesion_masks(height=120, width=160):
    masks = np.zeros((height, width, 2), np.uint8)
    masks[10, 150, 0] = 1  # a lone microaneurysm
    masks[80:90, 20:30, 1] = 1  # a dense cluster of exudates ...
    masks[95:100, 35:40, 0] = 1  # ... with microaneurysms beside it
    return masks


def test_every_class_colour_is_okabe_ito_and_a_lesion_model_gets_distinct_ones():
    lesions = class_colours(["MA", "HE", "EX", "SE", "OD", "drusen", "scar"])
    assert set(lesions.values()) <= set(OKABE_ITO.values()) and set(CLASS_COLOURS.values()) <= set(OKABE_ITO.values())
    assert len(set(lesions.values())) == 7  # unknown classes take colours no known lesion uses
    assert lesions["EX"] == OKABE_ITO["yellow"] and class_colours(["vessels"]) == {"vessels": OKABE_ITO["sky_blue"]}


def test_densest_crop_finds_the_cluster_and_stays_inside():
    top, left, side = densest_crop(lesion_masks(), 40)
    assert side == 40 and top <= 80 and top + side >= 100 and left <= 20 and left + side >= 40
    assert 0 <= top <= 120 - side and 0 <= left <= 160 - side
    assert densest_crop(lesion_masks(), 500)[2] == 120  # never larger than the image


def test_paint_uses_one_colour_per_lesion_type():
    image = np.full((120, 160, 3), 90, np.uint8)
    painted = paint(image, lesion_masks(), CHANNELS, alpha=1.0)
    assert tuple(painted[10, 150]) == CLASS_COLOURS["MA"] and tuple(painted[85, 25]) == CLASS_COLOURS["EX"]
    assert tuple(painted[0, 0]) == (90, 90, 90)


def exudate_pixels(path):
    """Pixels painted as exudate on the grey test image, in the left (ground truth) and right (prediction)
    column of a lesion figure, above the legend at its foot (the legend carries the pure colour)."""
    exudate = np.zeros((1, 1, 2), np.uint8)
    exudate[..., 1] = 1
    painted = paint(np.full((1, 1, 3), 90, np.uint8), exudate, CHANNELS)[0, 0].astype(int)
    picture = np.round(mpimg.imread(path)[..., :3] * 255).astype(int)
    panels = picture[: int(picture.shape[0] * 0.93)]
    ex = (np.abs(panels - painted) <= 1).all(axis=-1)
    half = ex.shape[1] // 2
    return int(ex[:, :half].sum()), int(ex[:, half:].sum())


def test_plot_lesions_writes_truth_beside_prediction(tmp_path):
    masks = lesion_masks()
    prob = masks.astype(np.float32) * 0.9
    image = np.full((120, 160, 3), 90, np.uint8)
    path = tmp_path / "lesions" / "img.png"
    plot_lesions(image, masks, prob, CHANNELS, {"MA": 0.5, "EX": 0.5}, "img", path)
    assert mpimg.imread(path).shape[0] > 1000
    truth, predicted = exudate_pixels(path)
    assert truth > 1000 and predicted > 1000  # the 10 x 10 px cluster, painted in both columns, full and cropped
    plot_lesions(image, masks, prob, CHANNELS, {"MA": 0.5, "EX": 0.95}, "img", path)  # 0.9 is below EX's threshold
    truth_only, none = exudate_pixels(path)
    assert truth_only == truth and none == 0


def test_lesion_evaluation_writes_pooled_metrics_csv_and_figures(tmp_path):
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(3)]
    masks = [(rng.random((96, 128, 2)) < 0.03).astype(np.uint8) for _ in range(3)]
    arrays = Arrays(images=images, masks=masks, fov=[np.ones((96, 128), bool)] * 3, names=["a", "b", "c"])
    predictor = Predictor(pointwise_model(), 64, Sampling.patches, InferenceConfig())
    summary = evaluate_model(predictor, {"val": arrays, "test": arrays}, CHANNELS, tmp_path, lesions=True)
    assert {"test_aupr_ma", "test_aupr_ex", "test_maupr", "test_f1_pooled_ma"} <= set(summary)
    assert 0 < summary["test_maupr"] < 0.2  # a random model on random lesions: near the 3% base rate
    assert json.loads((tmp_path / "metrics" / "summary.json").read_text())["test_maupr"] == summary["test_maupr"]
    table = pd.read_csv(tmp_path / "metrics" / "per_image.csv")
    assert len(table) == 6 and {"image", "channel", "aupr", "f1"} <= set(table.columns)
    assert sorted(p.name for p in (tmp_path / "lesions").iterdir()) == ["a.png", "b.png", "c.png"]


def test_a_lesion_report_shows_pr_curves_with_pooled_aupr_and_the_best_and_worst_images(tmp_path):
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(4)]
    masks = [(rng.random((96, 128, 2)) < share).astype(np.uint8) for share in (0.01, 0.02, 0.05, 0.1)]
    arrays = Arrays(images=images, masks=masks, fov=[np.ones((96, 128), bool)] * 4, names=["a", "b", "c", "d"])
    predictor = Predictor(pointwise_model(), 64, Sampling.patches, InferenceConfig())
    summary = evaluate_model(predictor, {"val": arrays, "test": arrays}, CHANNELS, tmp_path, lesions=True)
    svg = (tmp_path / artifacts.LESION_PR).with_suffix(".svg").read_text()
    for channel in CHANNELS:  # each lesion's legend entry carries the challenge's pooled AUPR of that lesion
        assert f"{channel}  AUPR {summary[f'test_aupr_{channel.lower()}']:.3f} (4 images)" in svg
    per_image = pd.read_csv(tmp_path / artifacts.PER_IMAGE).groupby("image")["aupr"].mean()
    write_report(tmp_path, "lesions", run_sections(tmp_path, compose_config(TINY)))
    report = (tmp_path / artifacts.REPORT_MD).read_text()
    assert "## Precision-recall per lesion" in report and f"]({artifacts.LESION_PR})" in report
    best, worst = per_image.idxmax(), per_image.idxmin()
    assert best != worst
    assert f"## Best test image by mean AUPR over lesions: {best} ({per_image[best]:.3f})" in report
    assert f"## Worst test image by mean AUPR over lesions: {worst} ({per_image[worst]:.3f})" in report
    assert f"](lesions/{best}.png)" in report and f"](lesions/{worst}.png)" in report
