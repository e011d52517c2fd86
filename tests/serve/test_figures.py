"""The figures of a response row, counted from masks and a field of view: area, share of the field of view
and, for lesion models, 8-connected regions; the signature declares each column."""

from __future__ import annotations

import numpy as np

from retina_seg.serve.contract import figures, signature


def test_figures_count_area_share_and_8_connected_regions():
    masks = np.zeros((40, 50, 2), bool)
    masks[5, 5, 0] = masks[6, 6, 0] = True  # touching at a corner: one region with 8-connectivity
    masks[20:23, 30:34, 0] = True  # a second region of 12 pixels
    masks[10:12, 10:12, 1] = True
    fov = np.zeros((40, 50), np.uint8)
    fov[:, :40] = 1
    row = figures(masks, fov, ["MA", "EX"])
    assert row == {"fov_area": 1600, "area_MA": 14, "fov_share_MA": 14 / 1600, "regions_MA": 2,
                   "area_EX": 4, "fov_share_EX": 4 / 1600, "regions_EX": 1}


def test_a_vessel_model_counts_no_regions_and_an_empty_fov_shares_nothing():
    masks = np.ones((8, 8, 1), bool)
    assert figures(masks, np.zeros((8, 8), np.uint8), ["vessels"]) == {"fov_area": 0, "area": 64, "fov_share": 0.0}


def test_signature_declares_the_figure_columns():
    lesions = {c.name for c in signature(["MA", "EX"]).outputs.inputs}
    assert {"scale", "fov_area", "area_MA", "fov_share_MA", "regions_MA", "regions_EX", "image"} <= lesions
    vessels = {c.name for c in signature(["vessels"]).outputs.inputs}
    assert {"area", "fov_share", "mask"} <= vessels and not any(name.startswith("regions") for name in vessels)
