"""Full-resolution inference, shared by evaluation and prediction.

`patches` models see native-resolution images through overlapping image_size windows whose
predictions are blended with Gaussian weights (centre pixels, which saw the most context, count
most); `resize` models see the whole image resized to image_size, and their prediction is resized
back. Optional flip test-time augmentation averages the four flips. Memory stays bounded for large
images: windows are predicted a batch at a time and only the probability map is accumulated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import tensorflow as tf

from retina_seg.config import InferenceConfig, Sampling
from retina_seg.data.pipeline import to_model_input


@dataclass
class Predictor:
    """Turns uint8 RGB images (H, W, 3) of any size into float32 probabilities (H, W, C) in [0, 1]."""

    model: tf.keras.Model
    window: int  # the training image_size
    sampling: Sampling
    settings: InferenceConfig

    def __post_init__(self) -> None:
        # a plain compiled forward pass: unlike model.predict it does not split a batch across the
        # replicas of a distribution strategy (a one-image batch would leave a replica empty)
        self._forward = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """uint8 RGB (N, H, W, 3) with H, W multiples of 32 -> float32 probabilities (N, H, W, C)."""
        return self._forward(tf.constant(to_model_input(batch))).numpy()

    @property
    def stride(self) -> int:
        return self.settings.stride or self.window // 2

    def __call__(self, image: np.ndarray) -> np.ndarray:
        views = [(False, False), (True, False), (False, True), (True, True)]
        if not self.settings.flip_tta:
            views = views[:1]
        total = None
        for flip_v, flip_h in views:
            view = _flip(image, flip_v, flip_h)
            prob = self._resized(view) if self.sampling is Sampling.resize else self._sliding(view)
            prob = _flip(prob, flip_v, flip_h)
            total = prob if total is None else total + prob
        return total / len(views)

    def _resized(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        small = cv2.resize(image, (self.window, self.window), interpolation=cv2.INTER_AREA)
        prob = self.predict(small[None])[0]
        restored = cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR)
        return restored.reshape(height, width, prob.shape[-1])

    def _sliding(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        size, stride = self.window, self.stride
        # reflect-pad so windows tile the image exactly (and images smaller than a window still work)
        pad_h, pad_w = _tiled(height, size, stride) - height, _tiled(width, size, stride) - width
        padded = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="symmetric")
        tops = range(0, padded.shape[0] - size + 1, stride)
        lefts = range(0, padded.shape[1] - size + 1, stride)
        corners = [(top, left) for top in tops for left in lefts]
        weight = gaussian_window(size)
        total = weight_sum = None
        for start in range(0, len(corners), self.settings.batch_size):
            chunk = corners[start: start + self.settings.batch_size]
            windows = np.stack([padded[top: top + size, left: left + size] for top, left in chunk])
            probs = self.predict(windows)
            if total is None:
                total = np.zeros((*padded.shape[:2], probs.shape[-1]), np.float32)
                weight_sum = np.zeros(padded.shape[:2], np.float32)
            for (top, left), prob in zip(chunk, probs, strict=True):
                total[top: top + size, left: left + size] += prob * weight[..., None]
                weight_sum[top: top + size, left: left + size] += weight
        return (total / weight_sum[..., None])[:height, :width]


def _tiled(length: int, size: int, stride: int) -> int:
    """The smallest length >= `length` that windows of `size` at `stride` cover exactly."""
    return size + max(0, math.ceil((length - size) / stride)) * stride


def gaussian_window(size: int, sigma_fraction: float = 0.25) -> np.ndarray:
    """(size, size) float32 weights: 1 at the centre, ~0.14 at the edge midpoints, ~0.02 in the corners,
    never 0 (so every pixel of a padded image is covered)."""
    axis = np.arange(size, dtype=np.float32) - (size - 1) / 2
    one = np.exp(-(axis**2) / (2 * (sigma_fraction * size) ** 2))
    return np.outer(one, one).astype(np.float32) + 1e-3


def _flip(pixels: np.ndarray, vertical: bool, horizontal: bool) -> np.ndarray:
    if vertical:
        pixels = pixels[::-1]
    if horizontal:
        pixels = pixels[:, ::-1]
    return np.ascontiguousarray(pixels)
