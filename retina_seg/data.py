"""Datasets as (image, masks, fov) file triples with their split, and reading them into arrays.

A dataset adapter only lists files; reading, checking and resizing are shared, so every dataset
gets the same error messages, and they come before training starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import cv2
import numpy as np

from retina_seg.config import ConfigError, DataConfig
from retina_seg.synthetic import LESION_TYPES, SyntheticSpec, ensure_dataset

SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """A data file that cannot be used; the message names the file and the rule it breaks."""


@dataclass(frozen=True)
class Sample:
    """One image with one mask file per output channel (None: that channel is empty) and its FOV."""

    image: Path
    masks: tuple
    fov: Path | None
    split: str


@dataclass
class Arrays:
    """Decoded samples: images uint8 RGB (N, H, W, 3), masks uint8 (N, H, W, C) in {0, 1}, fov bool (N, H, W)."""

    images: np.ndarray
    masks: np.ndarray
    fov: np.ndarray
    names: List[str]

    def __len__(self) -> int:
        return len(self.images)


def seeded_split(stems: Sequence[str], val_fraction: float, test_fraction: float, seed: int) -> Dict[str, str]:
    """Assign each stem to train/val/test by a seeded shuffle; every split gets at least one item."""
    order = np.random.default_rng(seed).permutation(len(stems))
    n_test = max(1, round(len(stems) * test_fraction))
    n_val = max(1, round(len(stems) * val_fraction))
    if n_test + n_val >= len(stems):
        raise ConfigError(f"data: {len(stems)} images are too few for a train/val/test split")
    split = {}
    for rank, index in enumerate(order):
        split[stems[index]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return split


def synthetic_samples(data: DataConfig, seed: int) -> List[Sample]:
    folder = ensure_dataset(data.root, SyntheticSpec(data.num_images, data.native_size, seed))
    stems = sorted(p.stem for p in (folder / "images").glob("*.png"))
    split = seeded_split(stems, data.val_fraction, data.test_fraction, seed)
    if data.task.value == "lesions":
        def masks_of(stem):
            return tuple(folder / "lesions" / f"{stem}_{name}.png" for name in data.lesion_types)
    else:
        def masks_of(stem):
            return (folder / "masks" / f"{stem}.png",)
    return [Sample(folder / "images" / f"{s}.png", masks_of(s), folder / "fov" / f"{s}.png", split[s])
            for s in stems]


ADAPTERS: Dict[str, Callable[[DataConfig, int], List[Sample]]] = {
    "synthetic": synthetic_samples,
}


def list_samples(data: DataConfig, seed: int) -> List[Sample]:
    """All samples of the configured dataset, each tagged with its split; checks every split is non-empty."""
    if data.name not in ADAPTERS:
        raise ConfigError(f"data.name={data.name!r} is unknown: expected one of {', '.join(sorted(ADAPTERS))}")
    if data.name == "synthetic":
        unknown = sorted(set(data.lesion_types) - set(LESION_TYPES))
        if unknown:
            raise ConfigError(f"data.lesion_types has {unknown}: the synthetic dataset draws {list(LESION_TYPES)}")
    samples = ADAPTERS[data.name](data, seed)
    for split in SPLITS:
        if not any(s.split == split for s in samples):
            raise DataError(f"data.root '{data.root}': no images in the {split} split")
    return samples


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 (H, W, 3); grayscale is repeated to three channels, alpha is dropped."""
    pixels = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if pixels is None:
        raise DataError(f"{path}: unreadable image (missing, truncated or not an image file)")
    return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)


def read_mask(path: Path) -> np.ndarray:
    """uint8 {0, 1} (H, W); accepts 0/1 and 0/255 masks and rejects anything in between."""
    pixels = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if pixels is None:
        raise DataError(f"{path}: unreadable mask (missing, truncated or not an image file)")
    values = np.unique(pixels)
    if not (set(values.tolist()) <= {0, 1} or set(values.tolist()) <= {0, 255}):
        raise DataError(f"{path}: mask is not binary (values {values[:6].tolist()}...; expected 0/1 or 0/255)")
    return (pixels > 0).astype(np.uint8)


def load_arrays(samples: Sequence[Sample], size: int) -> Arrays:
    """Read, check and resize samples to size x size (area for images, nearest for masks)."""
    images, masks, fovs = [], [], []
    for sample in samples:
        image = read_image(sample.image)
        shape = image.shape[:2]
        channels = []
        for path in sample.masks:
            mask = np.zeros(shape, np.uint8) if path is None else read_mask(path)
            if mask.shape != shape:
                raise DataError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
                                f"{sample.image.name} is {shape[1]}x{shape[0]}")
            channels.append(mask)
        fov = np.ones(shape, np.uint8) if sample.fov is None else read_mask(sample.fov)
        if fov.shape != shape:
            raise DataError(f"{sample.fov}: FOV mask size differs from its image {sample.image.name}")
        images.append(_resize(image, size, cv2.INTER_AREA))
        masks.append(np.stack([_resize(m, size, cv2.INTER_NEAREST) for m in channels], axis=-1))
        fovs.append(_resize(fov, size, cv2.INTER_NEAREST))
    return Arrays(images=np.stack(images), masks=np.stack(masks),
                  fov=np.stack(fovs).astype(bool),
                  names=[s.image.stem for s in samples])


def _resize(pixels: np.ndarray, size: int, interpolation: int) -> np.ndarray:
    if pixels.shape[:2] == (size, size):
        return pixels
    return cv2.resize(pixels, (size, size), interpolation=interpolation)


def load_splits(data: DataConfig, size: int, seed: int) -> Dict[str, Arrays]:
    """The configured dataset, read and checked, as arrays per split."""
    samples = list_samples(data, seed)
    return {split: load_arrays([s for s in samples if s.split == split], size) for split in SPLITS}
