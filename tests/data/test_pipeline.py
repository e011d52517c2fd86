"""The training pipeline: config-built augmentation, patch sampling, reproducibility, and batch shapes."""

from __future__ import annotations

import numpy as np
import pytest

from retina_seg.config import ConfigError, validate
from retina_seg.data.augment import build_augmentation
from retina_seg.data.loading import Arrays
from retina_seg.data.pipeline import training_dataset, validation_set
from retina_seg.data.synthetic import generate_fundus
from tests.conftest import compose_config


def fundus_arrays(count=3, size=96, seed=0):
    rng = np.random.default_rng(seed)
    made = [generate_fundus(size, rng) for _ in range(count)]
    return Arrays(images=[f.image for f in made], masks=[f.vessels[..., None] for f in made],
                  fov=[f.fov.astype(bool) for f in made], names=[str(i) for i in range(count)])


def augmentation(name_or_overrides, seed=0):
    overrides = [f"augmentation={name_or_overrides}"] if isinstance(name_or_overrides, str) else name_or_overrides
    return build_augmentation(validate(compose_config(overrides)).augmentation, seed)


def first_batches(ds, count=2):
    return [tuple(t.numpy() for t in batch) for batch in ds.take(count)]


@pytest.mark.parametrize("name", ["light", "strong"])
def test_yaml_pipelines_build_and_move_masks_with_images(name):
    arrays = fundus_arrays()
    ds = training_dataset(arrays, 3, 96, patches=False, foreground_share=0, augmentation=augmentation(name), seed=1)
    for images, masks in first_batches(ds):
        assert images.shape == (3, 96, 96, 3) and masks.shape == (3, 96, 96, 1)
        assert images.dtype == np.float32 and 0 <= images.min() and images.max() <= 1
        assert set(np.unique(masks)) <= {0.0, 1.0}
        # vessels stay where the (transformed) image is dark in green: geometry went to both alike
        green = images[..., 1]
        assert green[masks[..., 0] > 0].mean() < green[(masks[..., 0] == 0) & (images.sum(-1) > 0.3)].mean()


def test_flip_applies_identically_to_image_and_mask():
    arrays = fundus_arrays(count=1)
    flip = augmentation(["augmentation=none",
                         "+augmentation.transforms=[{_target_: albumentations.HorizontalFlip, p: 1.0}]"])
    [(images, masks)] = first_batches(training_dataset(arrays, 1, 96, False, 0, flip, seed=0), 1)
    np.testing.assert_array_equal(masks[0, ..., 0], arrays.masks[0][:, ::-1, 0])
    np.testing.assert_allclose(images[0], arrays.images[0][:, ::-1] / 255.0, atol=1e-6)


def test_same_seed_same_stream_other_seed_other_stream():
    arrays = fundus_arrays()
    def stream(seed):
        ds = training_dataset(arrays, 2, 64, True, 0.5, augmentation("strong", seed), seed=seed)
        return first_batches(ds, 3)
    a, b, c = stream(5), stream(5), stream(6)
    for (ia, ma), (ib, mb) in zip(a, b, strict=True):
        np.testing.assert_array_equal(ia, ib)
        np.testing.assert_array_equal(ma, mb)
    assert not all(np.array_equal(x[0], y[0]) for x, y in zip(a, c, strict=True))


def test_patches_centred_on_foreground_when_asked():
    arrays = fundus_arrays(count=2, size=160)
    def patches(share):
        ds = training_dataset(arrays, 8, 32, True, share, None, seed=3)
        return np.concatenate([m for _, m in first_batches(ds, 4)])[..., 0]
    centred = patches(1.0)
    assert centred.reshape(len(centred), -1).max(axis=1).all()  # every patch holds vessel pixels
    assert centred[:, 16, 16].mean() > 0.9  # centred on one, unless clipped at the image border
    assert patches(0.0)[:, 16, 16].mean() < 0.5


def test_whole_image_validation_pads_native_images_to_one_size_dividing_by_32():
    arrays = fundus_arrays(count=1, size=96)
    other = fundus_arrays(count=1, size=112)
    mixed = Arrays(arrays.images + other.images, arrays.masks + other.masks, arrays.fov + other.fov, ["a", "b"])
    images, masks = validation_set(mixed, 32, None, 0.5, 0)
    assert images.shape == (2, 128, 128, 3) and masks.shape == (2, 128, 128, 1)
    np.testing.assert_array_equal(images[1, :112, :112], other.images[0])
    assert not images[0, 96:].any() and not masks[0, :, 96:].any()  # zero padding


def test_validation_windows_are_drawn_once_by_seed_and_centred_like_training_patches():
    arrays = fundus_arrays(count=3, size=96)
    images, masks = validation_set(arrays, 32, 12, 1.0, 7)
    again, _ = validation_set(arrays, 32, 12, 1.0, 7)
    other, _ = validation_set(arrays, 32, 12, 1.0, 8)
    assert images.shape == (12, 32, 32, 3) and masks.shape == (12, 32, 32, 1)
    np.testing.assert_array_equal(images, again)
    assert not np.array_equal(images, other)
    assert masks.reshape(12, -1).max(axis=1).all()  # foreground_share 1: every window holds vessel pixels


@pytest.mark.parametrize(("transform", "reason"), [
    ("{_target_: albumentations.Affine, spin: 3}", "'spin' are not valid"),
    ("{_target_: albumentations.HorizontalFlip, p: often}", "is invalid"),
    ("{_target_: albumentations.Sharpen2}", "albumentations.Sharpen2"),
])
def test_transform_with_bad_arguments_names_its_position(transform, reason):
    with pytest.raises(ConfigError, match=r"augmentation.transforms\[1\][ .].*" + reason):
        augmentation(["augmentation=none",
                      f"+augmentation.transforms=[{{_target_: albumentations.VerticalFlip}}, {transform}]"])
