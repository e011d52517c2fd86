"""tf.data input pipelines: decoded uint8 images in memory -> float32 batches in [0, 1].

Training examples are made in parallel (resize or random patches, then augmentation); each example
is a pure function of (image index, draw number, seed), so a run's stream of augmented examples is
the same whatever thread made it.
"""

from __future__ import annotations

import copy
import threading

import albumentations as A
import numpy as np
import tensorflow as tf

from retina_seg.data.loading import Arrays

PAD_MULTIPLE = 32


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 RGB (N, H, W, 3) -> float32 in [0, 1], the scale every model here takes."""
    return images.astype(np.float32) / 255.0


class ExampleMaker:
    """Makes training example number `draw` from image `index`: a size x size crop (patch sampling,
    centred on a foreground pixel with probability `foreground_share`) or the resized image, then
    the augmentation, seeded from (seed, draw)."""

    def __init__(self, arrays: Arrays, size: int, patches: bool, foreground_share: float,
                 augmentation: A.Compose | None, seed: int):
        self.arrays, self.size, self.patches = arrays, size, patches
        self.foreground_share, self.augmentation, self.seed = foreground_share, augmentation, seed
        self.local = threading.local()  # one Compose per thread: seeding a shared one is not thread-safe

    def __call__(self, index, draw):
        rng = np.random.default_rng([self.seed, int(draw)])
        image, masks = self.arrays.images[int(index)], self.arrays.masks[int(index)]
        if self.patches:
            image, masks = self.crop(image, masks, rng)
        if self.augmentation is not None:
            compose = getattr(self.local, "compose", None)
            if compose is None:
                compose = self.local.compose = copy.deepcopy(self.augmentation)
            compose.set_random_seed(int(rng.integers(2**31)))
            out = compose(image=image, mask=masks)
            image, masks = out["image"], out["mask"]
        return np.ascontiguousarray(image), np.ascontiguousarray(masks)

    def crop(self, image, masks, rng):
        """A size x size window; images smaller than a window are zero-padded first."""
        height, width = image.shape[:2]
        pad_h, pad_w = max(0, self.size - height), max(0, self.size - width)
        if pad_h or pad_w:
            image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
            masks = np.pad(masks, ((0, pad_h), (0, pad_w), (0, 0)))
            height, width = image.shape[:2]
        foreground = np.argwhere(masks.any(axis=-1)) if rng.random() < self.foreground_share else ()
        if len(foreground):
            cy, cx = foreground[rng.integers(len(foreground))]
            top = int(np.clip(cy - self.size // 2, 0, height - self.size))
            left = int(np.clip(cx - self.size // 2, 0, width - self.size))
        else:
            top, left = int(rng.integers(height - self.size + 1)), int(rng.integers(width - self.size + 1))
        window = (slice(top, top + self.size), slice(left, left + self.size))
        return image[window], masks[window]


def training_dataset(arrays: Arrays, batch_size: int, size: int, patches: bool, foreground_share: float,
                     augmentation: A.Compose | None, seed: int) -> tf.data.Dataset:
    """Endless batches of (image float32 (B, size, size, 3), mask float32 (B, size, size, C)); each epoch
    visits every image once in a seeded shuffled order."""
    maker = ExampleMaker(arrays, size, patches, foreground_share, augmentation, seed)
    channels = arrays.masks[0].shape[-1]

    def make(index, draw):
        image, mask = tf.numpy_function(maker, [index, draw], [tf.uint8, tf.uint8], stateful=False)
        image.set_shape((size, size, 3))
        mask.set_shape((size, size, channels))
        return _to_float(image, mask)

    order = tf.data.Dataset.range(len(arrays)).shuffle(len(arrays), seed=seed, reshuffle_each_iteration=True)
    ds = tf.data.Dataset.zip((order.repeat(), tf.data.Dataset.counter()))
    return ds.map(make, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).batch(batch_size).prefetch(
        tf.data.AUTOTUNE)


def pad_to_multiple(pixels: np.ndarray, multiple: int = PAD_MULTIPLE) -> np.ndarray:
    """Zero-pad (H, W, ...) at the bottom and right so H and W divide by `multiple`."""
    height, width = pixels.shape[:2]
    return _pad_to(pixels, height + -height % multiple, width + -width % multiple)


def _pad_to(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    pad = ((0, height - pixels.shape[0]), (0, width - pixels.shape[1])) + ((0, 0),) * (pixels.ndim - 2)
    return np.pad(pixels, pad)


def evaluation_dataset(arrays: Arrays, batch_size: int, replicas: int = 1) -> tf.data.Dataset:
    """One ordered pass over whole (image, mask) pairs, zero-padded to a common size that divides by 32.
    With several replicas (MirroredStrategy) the first images are repeated so every replica gets a
    non-empty share of the last batch; these Keras validation scores only steer training, the
    reported evaluation is done separately on the exact images."""
    height = max(i.shape[0] for i in arrays.images)
    width = max(i.shape[1] for i in arrays.images)
    height, width = height + -height % PAD_MULTIPLE, width + -width % PAD_MULTIPLE
    order = list(range(len(arrays))) + list(range(-len(arrays) % replicas))
    images = np.stack([_pad_to(arrays.images[i], height, width) for i in order])
    masks = np.stack([_pad_to(arrays.masks[i], height, width) for i in order])
    return tf.data.Dataset.from_tensor_slices((images, masks)).batch(batch_size).map(_to_float).prefetch(
        tf.data.AUTOTUNE)


def _to_float(image, mask):
    return tf.cast(image, tf.float32) / 255.0, tf.cast(mask, tf.float32)
