"""The whole inference path of one trained model, from a decoded photograph to probabilities and masks.

`predict` and the served MLflow model both go through a Segmenter, so they cannot disagree: the
model's own training preprocessing (green channel, CLAHE), the Predictor (sliding window or whole
image, flip TTA), the field of view and the per-channel thresholds chosen on validation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List

import numpy as np

from retina_seg.config import PreprocessConfig
from retina_seg.data.loading import derive_fov, preprocess_image
from retina_seg.inference.ensemble import EnsemblePredictor
from retina_seg.inference.predictor import Predictor


@dataclass
class Segmenter:
    predictor: Predictor | EnsemblePredictor  # one model, or the folds of a cross-validation run averaged
    preprocess: PreprocessConfig  # as the model was trained
    channels: List[str]  # output channel names: ["vessels"] or the lesion types
    thresholds: Dict[str, float]  # per channel, chosen on validation
    fov_mask: bool  # zero everything outside the field of view

    def fov(self, image: np.ndarray) -> np.ndarray:
        """uint8 {0, 1} (H, W): the field of view derived from the photograph, as the model's training read it."""
        return derive_fov(image, self.preprocess.fov_threshold)

    def probabilities(self, image: np.ndarray, fov: np.ndarray | None = None) -> np.ndarray:
        """uint8 RGB (H, W, 3) as read from the file -> float32 (H, W, C) in [0, 1]; `fov`: the image's
        field of view when the caller already derived it."""
        prob = self.predictor(preprocess_image(image, self.preprocess))
        if self.fov_mask:
            prob *= (self.fov(image) if fov is None else fov)[..., None]
        return prob

    def masks(self, prob: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """bool (H, W, C): each channel at its own threshold, or at `threshold` for all channels when given."""
        levels = [self.thresholds[name] if threshold is None else threshold for name in self.channels]
        return prob >= np.asarray(levels)
