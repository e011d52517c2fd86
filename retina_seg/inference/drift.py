"""What a model's answers look like, image by image: the figures a served model is watched by for drift.

Two numbers per photograph, computed the same way on the validation split when a run is trained
(stored with the model) and on every photograph the server answers (exposed at `/metrics`), so an
alert can compare live with expected: the share of the image that is field of view, and per class
the share of the field of view predicted foreground at the model's own thresholds. A camera with
another field of view, an overexposed batch or a broken preprocessing step moves them long before
anyone looks at a mask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

import numpy as np

STATISTICS = {"min": 0.0, "p05": 5.0, "median": 50.0, "p95": 95.0, "max": 100.0}  # name -> percentile over images


@dataclass
class ImageStatistics:
    fov_fraction: float  # pixels inside the field of view / all pixels of the image
    foreground: Dict[str, float]  # class -> predicted pixels inside the field of view / its pixels (0 if empty)


def image_statistics(masks: np.ndarray, fov: np.ndarray, channels: List[str]) -> ImageStatistics:
    """`masks`: bool (H, W, C) at the model's thresholds; `fov`: (H, W), non-zero inside the field of view."""
    inside = fov.astype(bool)
    fov_pixels = int(np.count_nonzero(inside))
    foreground = {name: float(np.count_nonzero(masks[..., c] & inside)) / fov_pixels if fov_pixels else 0.0
                  for c, name in enumerate(channels)}
    return ImageStatistics(fov_pixels / inside.size, foreground)


def summary(images: List[ImageStatistics], channels: List[str]) -> dict:
    """The per-image figures' spread over a set of images: {"images": n, "fov_fraction": {statistic: value},
    "foreground_fraction": {class: {statistic: value}}}, statistics as in STATISTICS (empty for no images)."""

    def spread(values: List[float]) -> dict:
        if not values:
            return {}
        return {name: float(np.percentile(values, q)) for name, q in STATISTICS.items()}

    return {"images": len(images), "fov_fraction": spread([s.fov_fraction for s in images]),
            "foreground_fraction": {c: spread([s.foreground[c] for s in images]) for c in channels}}


def record(names: List[str], images: List[ImageStatistics], channels: List[str], thresholds: Dict[str, float]) -> dict:
    """The JSON a run stores: the thresholds the masks were cut at, each image's figures and their summary
    (`images` lists can be pooled over folds with `pooled`)."""
    return {"thresholds": thresholds, "summary": summary(images, channels),
            "images": [{"image": name, "fov_fraction": s.fov_fraction, "foreground_fraction": s.foreground}
                       for name, s in zip(names, images, strict=True)]}


def pooled(records: List[dict], channels: List[str]) -> dict:
    """One record from several (the folds of a cross-validation run, each on its own validation images)."""
    rows = [row for one in records for row in one["images"]]
    images = [ImageStatistics(row["fov_fraction"], row["foreground_fraction"]) for row in rows]
    thresholds = {c: float(np.mean([one["thresholds"][c] for one in records])) for c in channels}
    return record([row["image"] for row in rows], images, channels, thresholds)
