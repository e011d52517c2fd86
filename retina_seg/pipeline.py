"""tf.data input pipelines: uint8 arrays in, float32 batches out, augmentation in parallel on the train split."""

from __future__ import annotations

import albumentations as A
import numpy as np
import tensorflow as tf

from retina_seg.data import Arrays


def to_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 RGB (N, H, W, 3) -> float32 in [0, 1], the scale every model here is trained on."""
    return images.astype(np.float32) / 255.0


def training_dataset(arrays: Arrays, batch_size: int, augmentation: A.Compose | None, seed: int) -> tf.data.Dataset:
    """Endless shuffled batches of (image float32 (B, H, W, 3), mask float32 (B, H, W, C))."""
    ds = tf.data.Dataset.from_tensor_slices((arrays.images, arrays.masks))
    ds = ds.shuffle(len(arrays), seed=seed, reshuffle_each_iteration=True).repeat()
    if augmentation is not None:
        ds = ds.map(_augmenter(augmentation, arrays), num_parallel_calls=tf.data.AUTOTUNE)
    return ds.map(_to_float, num_parallel_calls=tf.data.AUTOTUNE).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def evaluation_dataset(arrays: Arrays, batch_size: int) -> tf.data.Dataset:
    """One ordered pass over (image, mask) batches, no augmentation."""
    ds = tf.data.Dataset.from_tensor_slices((arrays.images, arrays.masks))
    return ds.map(_to_float).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _augmenter(augmentation: A.Compose, arrays: Arrays):
    image_shape, mask_shape = arrays.images.shape[1:], arrays.masks.shape[1:]

    def apply(image: np.ndarray, mask: np.ndarray):
        out = augmentation(image=image, mask=mask)
        return out["image"], out["mask"]

    def augment(image, mask):
        image, mask = tf.numpy_function(apply, [image, mask], [tf.uint8, tf.uint8])
        image.set_shape(image_shape)
        mask.set_shape(mask_shape)
        return image, mask

    return augment


def _to_float(image, mask):
    return tf.cast(image, tf.float32) / 255.0, tf.cast(mask, tf.float32)
