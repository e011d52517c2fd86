"""The FOV-width rule that matches resolutions across datasets."""

from __future__ import annotations

import numpy as np

from retina_seg.data.loading import Arrays
from retina_seg.data.scale import fov_width, median_fov_width, rescale_to_fov
from retina_seg.data.synthetic import generate_fundus


def test_rescaling_makes_every_fov_as_wide_as_the_training_median():
    samples = [generate_fundus(size, np.random.default_rng(size)) for size in (48, 96)]
    arrays = Arrays(images=[s.image for s in samples], masks=[s.vessels[..., None] for s in samples],
                    fov=[s.fov.astype(bool) for s in samples], names=["small", "large"])
    widths = [fov_width(f) for f in arrays.fov]
    assert widths[1] > 1.8 * widths[0]
    rescaled, factor = rescale_to_fov(arrays, 72.0)
    assert [abs(fov_width(f) - 72) <= 2 for f in rescaled.fov] == [True, True]
    assert factor == np.median([72 / w for w in widths])
    for image, masks, fov in zip(rescaled.images, rescaled.masks, rescaled.fov, strict=True):
        assert image.shape[:2] == masks.shape[:2] == fov.shape
    assert set(np.unique(rescaled.masks[0])) <= {0, 1} and median_fov_width(rescaled) == np.median(
        [fov_width(f) for f in rescaled.fov])
