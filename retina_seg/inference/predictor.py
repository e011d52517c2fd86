"""Full-resolution inference, shared by evaluation and prediction.

`patches` models see native-resolution images through overlapping image_size windows whose
predictions are blended with Gaussian weights (centre pixels, which saw the most context, count
most); `resize` models see the whole image resized to image_size, and their prediction is resized
back. Optional flip test-time augmentation averages the four flips. Memory stays bounded for large
images: windows are predicted a batch at a time and only the probability map is accumulated.

`inference.mode=whole` exploits that the networks are fully convolutional: the image, padded to a
multiple of 32, goes through the network in one pass, so each pixel is computed once instead of about
four times. An image whose activations would exceed `inference.memory_budget_mb` is cut into the
fewest large tiles that fit (overlapping by half a training window, blended like small tiles).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import tensorflow as tf

from retina_seg.config import InferenceConfig, InferenceMode, Sampling
from retina_seg.data.loading import capped_size
from retina_seg.data.pipeline import to_model_input
from retina_seg.model.precision import at_precision_model, resolve


@dataclass
class Predictor:
    """Turns uint8 RGB images (H, W, 3) of any size into float32 probabilities (H, W, C) in [0, 1], computing at
    `settings.precision` (the model is rebuilt at that policy when it was built at another)."""

    model: tf.keras.Model
    window: int  # the training image_size
    sampling: Sampling
    settings: InferenceConfig
    size_multiple: int = 32  # whole mode pads images to a multiple of this (the encoder's total stride)
    max_side: int | None = None  # the training data's cap (data.max_side): larger images are predicted at it

    def __post_init__(self) -> None:
        self.precision = resolve(self.settings.precision)  # inference.precision, decided for this machine
        self.model = at_precision_model(self.model, self.precision)
        # a plain compiled forward pass: unlike model.predict it does not split a batch across the
        # replicas of a distribution strategy (a one-image batch would leave a replica empty)
        self._forward = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True,
                                    jit_compile=self.settings.jit_compile)
        self._bytes_per_pixel: float | None = None

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """uint8 RGB (N, H, W, 3) with H, W multiples of 32 -> float32 probabilities (N, H, W, C)."""
        return self._forward(tf.constant(to_model_input(batch))).numpy()

    @property
    def stride(self) -> int:
        return self.settings.stride or self.window // 2

    def __call__(self, image: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        """Probabilities at the image's own size, predicted at `size` (width, height: the FOV rule, see
        Segmenter) or, by default, at the image's size capped at max_side; probabilities are scaled back."""
        height, width = image.shape[:2]
        if size is None:
            size = capped_size(image.shape, self.max_side if self.sampling is Sampling.patches else None)
        if size == (width, height):
            return self._at_scale(image)
        prob = self._at_scale(cv2.resize(image, size, interpolation=cv2.INTER_AREA))
        return cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR).reshape(height, width, -1)

    def _at_scale(self, image: np.ndarray) -> np.ndarray:
        views = [(False, False), (True, False), (False, True), (True, True)]
        if not self.settings.flip_tta:
            views = views[:1]
        total = None
        for flip_v, flip_h in views:
            view = _flip(image, flip_v, flip_h)
            prob = self._resized(view) if self.sampling is Sampling.resize else self._native(view)
            prob = _flip(prob, flip_v, flip_h)
            total = prob if total is None else total + prob
        return total / len(views)

    def _resized(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        small = cv2.resize(image, (self.window, self.window), interpolation=cv2.INTER_AREA)
        prob = self.predict(small[None])[0]
        restored = cv2.resize(prob, (width, height), interpolation=cv2.INTER_LINEAR)
        return restored.reshape(height, width, prob.shape[-1])

    @property
    def whole_capable(self) -> bool:
        """Whole-image passes need a network built for any input size (not PSPNet's fixed one)."""
        return self.settings.mode is InferenceMode.whole and self.model.input_shape[1] is None

    def activation_bytes(self, height: int, width: int) -> float:
        """Estimated peak activation memory of one forward pass over a (height, width) input."""
        if self._bytes_per_pixel is None:
            self._bytes_per_pixel = activation_bytes_per_pixel(self.model, self.size_multiple * 2)
        return self._bytes_per_pixel * height * width

    def whole_tile(self, height: int, width: int) -> int | None:
        """None when the padded image fits the memory budget in one pass, else the side of the largest
        square tile (a multiple of 32, at least the training window) that does."""
        multiple = self.size_multiple
        padded_h, padded_w = (math.ceil(max(side, multiple) / multiple) * multiple for side in (height, width))
        budget = self.settings.memory_budget_mb * 2**20
        if self.activation_bytes(padded_h, padded_w) <= budget:
            return None
        side = int(math.sqrt(budget / self.activation_bytes(1, 1))) // multiple * multiple
        return max(side, self.window)

    def _native(self, image: np.ndarray) -> np.ndarray:
        if not self.whole_capable:
            return self._sliding(image, self.window, self.stride)
        height, width = image.shape[:2]
        tile = self.whole_tile(height, width)
        if tile is not None:
            return self._sliding(image, tile, tile - self.window // 2)
        multiple = self.size_multiple
        pad_h, pad_w = -height % multiple, -width % multiple
        padded = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="symmetric")
        return self.predict(padded[None])[0, :height, :width]

    def _sliding(self, image: np.ndarray, size: int, stride: int) -> np.ndarray:
        height, width = image.shape[:2]
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


def activation_bytes_per_pixel(model: tf.keras.Model, probe_side: int, headroom: float = 4.0) -> float:
    """Bytes of activations per input pixel at the peak of a forward pass, estimated as `headroom` times
    the largest layer output (in its own dtype) per input pixel, found by running the network on a small probe.
    Measured on a ResNet-18 U-Net (CPU, 8.2 Mpx): the peak is about 3x its largest layer output."""
    side = model.input_shape[1] or probe_side
    largest = 0.0
    for network in _networks(model):
        probe = tf.keras.Model(network.inputs, [layer.get_output_at(0) for layer in network.layers[1:]])
        for output in tf.nest.flatten(probe(tf.zeros((1, side, side, 3)), training=False)):
            largest = max(largest, output.dtype.size * float(np.prod(output.shape[1:])) / (side * side))
    return headroom * largest


def _networks(model: tf.keras.Model) -> list[tf.keras.Model]:
    """The model and the models nested in it (e.g. the backbone-normalisation wrapper's U-Net)."""
    nested = [layer for layer in model.layers if isinstance(layer, tf.keras.Model)]
    return [model, *[inner for layer in nested for inner in _networks(layer)]]


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
