"""Matching resolutions across datasets: the field of view's width is the common ruler.

Fundus cameras differ (DRIVE 565 px wide, CHASE_DB1 999 px, HRF 3504 px), while the eye they image
does not, so vessel calibre in pixels scales with the FOV's width. A model trained on patches at one
scale is tested on another dataset after scaling each target image so that its FOV width equals the
training set's median FOV width (`rescale=fov`); metrics are then computed at that scale.
"""

from __future__ import annotations

import numpy as np

from retina_seg.data.loading import Arrays, resized


def fov_width(fov: np.ndarray) -> int:
    """Width in pixels of the field of view (its horizontal extent; FOVs are often cut at top and bottom)."""
    columns = np.flatnonzero(fov.any(axis=0))
    return int(columns[-1] - columns[0] + 1) if len(columns) else fov.shape[1]


def median_fov_width(arrays: Arrays) -> float:
    return float(np.median([fov_width(f) for f in arrays.fov]))


FOV_TOLERANCE = 0.1  # FOVs within 10% of the training width are left as they are: resampling costs sharpness


def fov_factor(fov: np.ndarray, width: float | None) -> float:
    """The factor that makes this FOV `width` pixels wide (the training images' median); 1 when it is within
    FOV_TOLERANCE of it already, or when `width` is unknown (None)."""
    if not width:
        return 1.0
    factor = width / fov_width(fov)
    return 1.0 if abs(factor - 1) <= FOV_TOLERANCE else factor


def scaled_size(shape: tuple, factor: float) -> tuple[int, int]:
    """(width, height) of an image of `shape` scaled by `factor`."""
    return max(1, round(shape[1] * factor)), max(1, round(shape[0] * factor))


def rescale_to_fov(arrays: Arrays, width: float) -> tuple[Arrays, float]:
    """Every sample scaled so its FOV is `width` pixels wide (see `fov_factor`); returns the arrays and the
    median factor."""
    out = Arrays(images=[], masks=[], fov=[], names=list(arrays.names))
    factors = []
    for image, masks, fov in zip(arrays.images, arrays.masks, arrays.fov, strict=True):
        factor = fov_factor(fov, width)
        size = scaled_size(image.shape, factor)
        image, masks, fov = resized(image, masks, fov.astype(np.uint8), size)
        out.images.append(image)
        out.masks.append(masks)
        out.fov.append(fov.astype(bool))
        factors.append(factor)
    return out, float(np.median(factors))
