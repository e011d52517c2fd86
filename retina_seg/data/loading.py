"""Reading datasets into checked, preprocessed arrays, before any training starts.

Adapters (`adapters.py`) list files; this module decodes them (PNG, JPEG, TIFF, GIF, BMP, Netpbm, .gz),
checks them (readable, same size, binary masks), derives field-of-view masks where none are shipped,
applies the configured preprocessing, and keeps the decoded images in memory (the pipeline's cache).
"""

from __future__ import annotations

import gzip
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from retina_seg.config import ConfigError, DataConfig, PreprocessConfig
from retina_seg.data.adapters import ADAPTERS, LayoutError, Sample
from retina_seg.data.cache import ArrayCache, sample_key
from retina_seg.errors import UserError

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


class DataError(UserError):
    """A data file that cannot be used; the message names the file and the rule it breaks."""


@dataclass
class Arrays:
    """Decoded samples of one split, one entry per image (sizes may differ at native resolution):
    images uint8 RGB (H, W, 3), masks uint8 (H, W, C) in {0, 1}, fov bool (H, W)."""

    images: List[np.ndarray]
    masks: List[np.ndarray]
    fov: List[np.ndarray]
    names: List[str]

    def __len__(self) -> int:
        return len(self.images)

    def take(self, indices: Sequence[int]) -> Arrays:
        return Arrays(*([values[i] for i in indices] for values in (self.images, self.masks, self.fov, self.names)))


def list_samples(data: DataConfig, seed: int) -> List[Sample]:
    """All samples of the configured dataset, each tagged with its split; every split must be non-empty."""
    if data.name not in ADAPTERS:
        raise ConfigError(f"data.name={data.name!r} is unknown: expected one of {', '.join(sorted(ADAPTERS))}")
    try:
        samples = ADAPTERS[data.name](data, seed)
    except LayoutError as exc:
        raise DataError(str(exc)) from exc
    for split in SPLITS:
        if not any(s.split == split for s in samples):
            raise DataError(f"data.root '{data.root}': no images in the {split} split")
    return samples


def _decode(path: Path, flags: int) -> np.ndarray | None:
    """Pixels, or None when OpenCV cannot decode the file. A truncated JPEG is the one case OpenCV
    decodes without complaint (the missing part comes out grey), so JPEGs are also decoded by Pillow,
    at 1/8 scale (a third of the cost), which raises on truncation."""
    if path.is_file() and path.stat().st_size == 0:
        raise DataError(f"{path}: empty file (0 bytes)")
    if path.name.lower().endswith((".jpg", ".jpeg")):
        try:
            with Image.open(path) as jpeg:
                jpeg.draft(jpeg.mode, (max(1, jpeg.width // 8), max(1, jpeg.height // 8)))
                jpeg.load()
        except OSError as exc:
            raise DataError(f"{path}: truncated or corrupt JPEG ({exc})") from exc
    if path.name.lower().endswith(".gz"):
        try:
            raw = gzip.decompress(path.read_bytes())
        except (OSError, EOFError):
            return None
        return cv2.imdecode(np.frombuffer(raw, np.uint8), flags)
    return cv2.imread(str(path), flags)


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 (H, W, 3); grayscale is repeated to three channels, alpha is dropped."""
    return _as_rgb(_decode(path, cv2.IMREAD_COLOR), path)


def decode_image(raw: bytes, source: str) -> np.ndarray:
    """`read_image` for file bytes already in memory (a served request): the same decoder, the same pixels."""
    return _as_rgb(cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR) if raw else None, source)


def _as_rgb(pixels: np.ndarray | None, source) -> np.ndarray:
    if pixels is None:
        raise DataError(f"{source}: unreadable image (missing, truncated or not an image file)")
    return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)


def read_mask(path: Path, thresholded: list | None = None) -> np.ndarray:
    """uint8 {0, 1} (H, W). A mask with two grey levels is binary whatever they are (0/1, 0/255, 1-bit PNG,
    red-on-black TIFF, GIF palettes such as DRIVE's 3/253): the higher level is the foreground. A nearly
    two-level mask (JPEG artefacts) is thresholded at half its maximum and its path appended to
    `thresholded`, so that the caller says once how many were (without a list: a warning for this file);
    anything else (a grey-level or probability image) is rejected."""
    pixels = _decode(path, cv2.IMREAD_GRAYSCALE)
    if pixels is None:
        raise DataError(f"{path}: unreadable mask (missing, truncated or not an image file)")
    values = grey_levels(pixels)
    if len(values) == 1:
        return (pixels > 0).astype(np.uint8)
    if len(values) == 2:
        return (pixels == values[1]).astype(np.uint8)
    top = int(values[-1])
    near_levels = (pixels <= 0.1 * top) | (pixels >= 0.9 * top)
    if near_levels.mean() < 0.98:
        raise DataError(f"{path}: mask is not binary ({len(values)} grey levels; expected two levels such as 0/255)")
    if thresholded is None:
        warn_thresholded([path], 1)
    else:
        thresholded.append(path)
    return (pixels > top // 2).astype(np.uint8)


def grey_levels(pixels: np.ndarray) -> np.ndarray:
    """The grey levels present in a uint8 image, ascending: a 256-bin histogram, eight times cheaper than
    np.unique's sort on a 12-megapixel IDRiD mask."""
    return np.flatnonzero(cv2.calcHist([pixels], [0], None, [256], [0, 256]).ravel())


def warn_thresholded(paths: list, total: int) -> None:
    """One warning for the nearly two-level masks `read_mask` thresholded among `total` mask files."""
    if paths:
        names = ", ".join(str(p) for p in paths[:3]) + (", ..." if len(paths) > 3 else "")
        log.warning("%d of %d mask files have more than two grey levels (JPEG-compressed?) and were thresholded at "
                    "half their maximum: %s", len(paths), total, names)


def derive_fov(image: np.ndarray, threshold: int) -> np.ndarray:
    """Field of view of a fundus photograph: the largest bright region of the red channel, holes filled."""
    bright = (image[..., 0] > threshold).astype(np.uint8)
    contours, _ = cv2.findContours(bright, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    fov = np.zeros_like(bright)
    if contours:
        cv2.drawContours(fov, [max(contours, key=cv2.contourArea)], -1, 1, thickness=cv2.FILLED)
    return fov


def preprocess_image(image: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Colour preprocessing that stays outside the model (green channel, CLAHE); uint8 RGB in and out."""
    if cfg.clahe:
        lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
        clahe = cv2.createCLAHE(clipLimit=cfg.clahe_clip_limit, tileGridSize=(8, 8))
        lab[..., 0] = clahe.apply(lab[..., 0])
        image = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    if cfg.green_channel:
        image = np.repeat(image[..., 1:2], 3, axis=-1)
    return image


def load_sample(sample: Sample, preprocess: PreprocessConfig, thresholded: list | None = None) -> tuple:
    """Read and check one sample at native resolution: (image, masks (H, W, C), fov); `thresholded`: see
    `read_mask`."""
    image = read_image(sample.image)
    shape = image.shape[:2]
    channels = []
    for path in sample.masks:
        mask = np.zeros(shape, np.uint8) if path is None else read_mask(path, thresholded)
        if mask.shape != shape:
            raise DataError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
                            f"{sample.image.name} is {shape[1]}x{shape[0]}")
        channels.append(mask)
    if sample.fov is None:
        fov = derive_fov(image, preprocess.fov_threshold)
    else:
        fov = read_mask(sample.fov, thresholded)
        if fov.shape != shape:
            raise DataError(f"{sample.fov}: FOV mask is {fov.shape[1]}x{fov.shape[0]} but its image "
                            f"{sample.image.name} is {shape[1]}x{shape[0]}")
    return preprocess_image(image, preprocess), np.stack(channels, axis=-1), fov


def _mask_files(sample: Sample) -> list:
    return [path for path in (*sample.masks, sample.fov) if path is not None]


def capped_size(shape: tuple, max_side: int | None) -> tuple:
    """(width, height) of an image of `shape` downscaled so its longest side is at most max_side."""
    height, width = shape[:2]
    if max_side is None or max(height, width) <= max_side:
        return width, height
    scale = max_side / max(height, width)
    return round(width * scale), round(height * scale)


def resized(image: np.ndarray, masks: np.ndarray, fov: np.ndarray, size: tuple) -> tuple:
    """A sample at (width, height): area interpolation for the image, nearest for masks and FOV."""
    if image.shape[1::-1] == tuple(size):
        return image, masks, fov
    channels = masks.shape[-1]
    masks = cv2.resize(masks, size, interpolation=cv2.INTER_NEAREST).reshape(size[1], size[0], channels)
    return (cv2.resize(image, size, interpolation=cv2.INTER_AREA), masks,
            cv2.resize(fov, size, interpolation=cv2.INTER_NEAREST))


def load_arrays(samples: Sequence[Sample], preprocess: PreprocessConfig, max_side: int | None = None,
                workers: int = 4, cache_dir: str | None = None) -> Arrays:
    """Decode samples in parallel threads (OpenCV releases the GIL) at native resolution, capped at max_side.
    Every file is decoded and checked; all problems are raised together, one line each. With `cache_dir`,
    samples decoded by an earlier run with the same files and preprocessing are read back. Nearly two-level
    masks that had to be thresholded are counted in one warning."""
    cache = ArrayCache(cache_dir) if cache_dir else None
    thresholded = []  # appended to from the decoding threads (list.append is atomic)

    def decode(sample):
        try:
            image, masks, fov = load_sample(sample, preprocess, thresholded)
        except DataError as exc:
            return exc
        return resized(image, masks, fov, capped_size(image.shape, max_side))

    def cached(sample):
        key = sample_key([sample.image, *sample.masks, sample.fov], preprocess, max_side)
        return key, cache.get(sample.image.stem, key)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        looked_up = list(pool.map(cached, samples)) if cache else [(None, None)] * len(samples)
        missing = [i for i, (_, hit) in enumerate(looked_up) if hit is None]
        decoded = [hit for _, hit in looked_up]
        progress = tqdm(total=len(missing), desc="decoding images" + (" into the cache" if cache else ""),
                        unit="image", disable=None, leave=False)
        for index, arrays in zip(missing, pool.map(decode, [samples[i] for i in missing]), strict=True):
            decoded[index] = arrays
            if cache and not isinstance(arrays, DataError):
                cache.put(samples[index].image.stem, looked_up[index][0], *arrays)
            progress.update()
        progress.close()
    warn_thresholded(sorted(thresholded), sum(len(_mask_files(samples[i])) for i in missing))
    problems = [str(d) for d in decoded if isinstance(d, DataError)]
    if problems:
        raise DataError("\n".join(problems))
    if cache and samples:
        log.info("data cache %s: %d of %d samples read back, %d decoded", cache.folder, len(samples) - len(missing),
                 len(samples), len(missing))
    return Arrays(images=[d[0] for d in decoded], masks=[d[1] for d in decoded],
                  fov=[d[2].astype(bool) for d in decoded], names=[s.image.stem for s in samples])


def resize_arrays(arrays: Arrays, side: int) -> Arrays:
    """The same samples at side x side (the training scale of `sampling: resize`)."""
    scaled = [resized(i, m, f.astype(np.uint8), (side, side)) for i, m, f in zip(arrays.images, arrays.masks,
                                                                                arrays.fov, strict=True)]
    return Arrays(images=[s[0] for s in scaled], masks=[s[1] for s in scaled], fov=[s[2].astype(bool) for s in scaled],
                  names=list(arrays.names))


def check_channels(arrays: Dict[str, Arrays], channels: List[str], root: str) -> None:
    """A channel with no foreground in any training image cannot be learnt: say so before training."""
    train = arrays["train"]
    for c, name in enumerate(channels):
        if not any(mask[..., c].any() for mask in train.masks):
            raise DataError(f"data.root '{root}': channel {name} has no foreground pixel in any training image")


def load_splits(data: DataConfig, preprocess: PreprocessConfig, seed: int,
                samples: Sequence[Sample] | None = None, cache_dir: str | None = None) -> Dict[str, Arrays]:
    """The configured dataset (or `samples` of it, e.g. one cross-validation fold), read and checked, as
    arrays per split at native resolution (capped at `data.max_side`): evaluation happens at this resolution.
    `cache_dir`: see `load_arrays`."""
    samples = list_samples(data, seed) if samples is None else samples
    # one pass: every bad file reported at once
    everything = load_arrays(samples, preprocess, data.max_side, cache_dir=cache_dir)
    arrays = {split: everything.take([i for i, s in enumerate(samples) if s.split == split]) for split in SPLITS}
    check_channels(arrays, data.channels, data.root)
    return arrays


def regroup(splits: Dict[str, Arrays], samples: Sequence[Sample], data: DataConfig) -> Dict[str, Arrays]:
    """The same decoded images under the split assignment of `samples` (cross-validation folds decode once)."""
    decoded = {name: (a.images[i], a.masks[i], a.fov[i]) for a in splits.values() for i, name in enumerate(a.names)}
    arrays = {}
    for split in SPLITS:
        names = [s.image.stem for s in samples if s.split == split]
        arrays[split] = Arrays(images=[decoded[n][0] for n in names], masks=[decoded[n][1] for n in names],
                               fov=[decoded[n][2] for n in names], names=names)
    check_channels(arrays, data.channels, data.root)
    return arrays
