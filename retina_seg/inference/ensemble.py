"""The cross-validation ensemble: the folds' models predict the same image and their probabilities are averaged.

Each member is a full `Predictor` (its own sliding window, TTA and blending), so an ensemble is a
drop-in replacement wherever a Predictor is called on an image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np

from retina_seg.inference.predictor import Predictor


@dataclass
class EnsemblePredictor:
    """uint8 RGB (H, W, 3) -> float32 probabilities (H, W, C): the mean over the members' probabilities."""

    members: List[Predictor]

    def __post_init__(self) -> None:
        if not self.members:
            raise ValueError("an ensemble needs at least one model")

    @property
    def stride(self) -> int:
        return self.members[0].stride

    @property
    def precision(self):
        return self.members[0].precision

    def __call__(self, image: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
        total = self.members[0](image, size)
        for member in self.members[1:]:
            total = total + member(image, size)
        return (total / len(self.members)).astype(np.float32)
