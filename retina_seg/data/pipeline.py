"""tf.data input pipelines: decoded uint8 images in memory -> float32 batches in [0, 1].

Training examples are made in parallel (resize or random patches, then augmentation); each example
is a pure function of (image index, draw number, seed), so a run's stream of augmented examples is
the same whatever thread made it.
"""

from __future__ import annotations

import copy
import threading
from typing import Sequence

import albumentations as A
import numpy as np
import tensorflow as tf

from retina_seg.data.loading import Arrays

PAD_MULTIPLE = 32


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 RGB (N, H, W, 3) -> float32 in [0, 1], the scale every model here takes."""
    return images.astype(np.float32) / 255.0


class ExampleMaker:
    """Makes training example number `draw` from image `index`: a size x size crop or the resized image,
    then the augmentation, seeded from (seed, draw). Crops are centred on a foreground pixel of any channel
    with probability `foreground_share`; with `class_shares` (one share per channel) instead on a pixel of
    channel c with probability class_shares[c], taken from an image that has that channel (a rare lesion
    present in half the images is then seen as often as asked), and anywhere otherwise."""

    def __init__(self, arrays: Arrays, size: int, patches: bool, foreground_share: float,
                 augmentation: A.Compose | None, seed: int, class_shares: Sequence[float] | None = None):
        self.arrays, self.size, self.patches = arrays, size, patches
        self.foreground_share, self.augmentation, self.seed = foreground_share, augmentation, seed
        self.class_shares = np.cumsum(class_shares) if class_shares is not None else None
        channels = arrays.masks[0].shape[-1] if len(arrays) else 0
        self.holders = [[i for i, m in enumerate(arrays.masks) if m[..., c].any()] for c in range(channels)]
        self.local = threading.local()  # one Compose per thread: seeding a shared one is not thread-safe

    def __call__(self, index, draw):
        rng = np.random.default_rng([self.seed, int(draw)])
        index = int(index)
        if self.patches:
            index, channel = self.centre_on(index, rng)
            image, masks = self.crop(self.arrays.images[index], self.arrays.masks[index], channel, rng)
        else:
            image, masks = self.arrays.images[index], self.arrays.masks[index]
        if self.augmentation is not None:
            compose = getattr(self.local, "compose", None)
            if compose is None:
                compose = self.local.compose = copy.deepcopy(self.augmentation)
            compose.set_random_seed(int(rng.integers(2**31)))
            out = compose(image=image, mask=masks)
            image, masks = out["image"], out["mask"]
        return np.ascontiguousarray(image), np.ascontiguousarray(masks)

    def centre_on(self, index: int, rng: np.random.Generator) -> tuple:
        """(image index, channel to centre on: an int, "any" for any foreground, None for anywhere)."""
        if self.class_shares is None:
            return index, "any" if rng.random() < self.foreground_share else None
        channel = int(np.searchsorted(self.class_shares, rng.random(), side="right"))
        if channel >= len(self.holders) or not self.holders[channel]:
            return index, None
        holders = self.holders[channel]
        return (index if index in holders else holders[rng.integers(len(holders))]), channel

    def crop(self, image, masks, channel, rng):
        """A size x size window centred on a pixel of `channel` if it has one; images smaller than a window
        are zero-padded first."""
        height, width = image.shape[:2]
        pad_h, pad_w = max(0, self.size - height), max(0, self.size - width)
        if pad_h or pad_w:
            image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)))
            masks = np.pad(masks, ((0, pad_h), (0, pad_w), (0, 0)))
            height, width = image.shape[:2]
        if channel is None:
            foreground = ()
        else:
            foreground = np.argwhere(masks.any(axis=-1) if channel == "any" else masks[..., channel])
        if len(foreground):
            cy, cx = foreground[rng.integers(len(foreground))]
            top = int(np.clip(cy - self.size // 2, 0, height - self.size))
            left = int(np.clip(cx - self.size // 2, 0, width - self.size))
        else:
            top, left = int(rng.integers(height - self.size + 1)), int(rng.integers(width - self.size + 1))
        window = (slice(top, top + self.size), slice(left, left + self.size))
        return image[window], masks[window]


def training_dataset(arrays: Arrays, batch_size: int, size: int, patches: bool, foreground_share: float,
                     augmentation: A.Compose | None, seed: int,
                     class_shares: Sequence[float] | None = None) -> tf.data.Dataset:
    """Endless batches of (image float32 (B, size, size, 3), mask float32 (B, size, size, C)); each epoch
    visits every image once in a seeded shuffled order (patches centred on a rare class may come from
    another image that has it, see ExampleMaker)."""
    maker = ExampleMaker(arrays, size, patches, foreground_share, augmentation, seed, class_shares)
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


def validation_set(arrays: Arrays, size: int, windows: int | None, foreground_share: float, seed: int,
                   class_shares: Sequence[float] | None = None,
                   multiple: int = PAD_MULTIPLE) -> tuple[np.ndarray, np.ndarray]:
    """The images that steer training (best epoch, learning-rate schedule, early stop), drawn once: uint8
    (N, H, W, 3) images and (N, H, W, C) masks. `windows` size x size crops, centred like training patches
    (foreground share or class shares, without augmentation) and seeded, cycling through the images; with
    `windows` None, every whole image zero-padded to a common size that divides by `multiple` (the
    architecture's: a PSPNet trained on image_size images resized, image_size a multiple of 48, gets them
    unpadded)."""
    if windows is not None:
        maker = ExampleMaker(arrays, size, True, foreground_share, None, seed, class_shares)
        crops = [maker(draw % len(arrays), draw) for draw in range(windows)]
        return np.stack([c[0] for c in crops]), np.stack([c[1] for c in crops])
    height = max(i.shape[0] for i in arrays.images)
    width = max(i.shape[1] for i in arrays.images)
    height, width = height + -height % multiple, width + -width % multiple
    return (np.stack([_pad_to(image, height, width) for image in arrays.images]),
            np.stack([_pad_to(masks, height, width) for masks in arrays.masks]))


def _to_float(image, mask):
    return tf.cast(image, tf.float32) / 255.0, tf.cast(mask, tf.float32)
