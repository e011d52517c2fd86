"""Paper-ready figures: PNG at 200 dpi plus an SVG copy, whole-epoch ticks, error maps in three colours."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

from retina_seg.reporting.figures import ERROR_COLOURS, error_map, plot_examples, plot_history


def test_history_figure_is_a_200_dpi_png_with_an_svg_copy_and_whole_epoch_ticks(tmp_path):
    history = pd.DataFrame({"epoch": range(3), "loss": [1.0, 0.8, 0.7], "val_loss": [1.1, 0.9, 0.8],
                            "f1-score": [0.2, 0.4, 0.5], "val_f1-score": [0.1, 0.3, 0.4]})
    plot_history(history, tmp_path / "curves.png")
    with Image.open(tmp_path / "curves.png") as png:
        assert round(png.info["dpi"][0]) == 200
    svg = (tmp_path / "curves.svg").read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    assert "per epoch" in svg and "epoch" in svg  # titles and axis labels are text in the vector copy


def test_error_map_paints_true_positives_false_positives_and_false_negatives_inside_the_fov():
    image = np.full((2, 3, 3), 100, np.uint8)
    truth = np.array([[1, 1, 0], [0, 0, 1]], bool)
    prediction = np.array([[1, 0, 1], [0, 0, 1]], bool)
    fov = np.array([[1, 1, 1], [1, 1, 0]], bool)
    painted = error_map(image, truth, prediction, fov, alpha=1.0)
    assert tuple(painted[0, 0]) == ERROR_COLOURS["true positive"]
    assert tuple(painted[0, 1]) == ERROR_COLOURS["false negative"]
    assert tuple(painted[0, 2]) == ERROR_COLOURS["false positive"]
    assert tuple(painted[1, 0]) == (100, 100, 100) and tuple(painted[1, 2]) == (100, 100, 100)  # TN; outside FOV
    # the colours the docs name (Okabe-Ito): bluish green, vermillion, sky blue
    assert ERROR_COLOURS == {"true positive": (0, 158, 115), "false positive": (213, 94, 0),
                             "false negative": (86, 180, 233)}


def test_examples_show_overlay_and_error_map_with_f1_and_keep_full_resolution_copies(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (90, 120, 3), dtype=np.uint8) for _ in range(2)]
    truths = [rng.random((90, 120, 1)) > 0.8 for _ in range(2)]
    probs = [rng.random((90, 120, 1)).astype(np.float32) for _ in range(2)]
    fovs = [np.ones((90, 120), bool)] * 2
    plot_examples(images, truths, probs, fovs, ["a", "b"], [0.5], {"a": 0.25, "b": 0.5}, tmp_path / "ex.png")
    assert (tmp_path / "ex.png").exists() and "F1 0.250" in (tmp_path / "ex.svg").read_text()
    with Image.open(tmp_path / "examples" / "b_errors.png") as full:
        assert full.size == (120, 90)
