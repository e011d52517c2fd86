"""An on-disk cache of decoded, checked, preprocessed samples, so a second run starts training in seconds.

Decoding a 4288x2848 JPEG and its TIFF masks takes about a second per image on 2 cores. An entry is
keyed by the content of every file of the sample and by everything that shapes the arrays (the
preprocessing config and max_side); editing a file or changing either config gives a new key, so a
stale entry is never read. Entries are uncompressed .npz files, written atomically.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from retina_seg.config import PreprocessConfig

FORMAT = 1  # bump when the meaning of the cached arrays changes


def _file_digest(path: Path | None) -> str:
    if path is None:
        return "none"
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sample_key(files: list, preprocess: PreprocessConfig, max_side: int | None) -> str:
    """Hex key of one sample: its files' contents (None: an empty channel) and the preprocessing."""
    settings = json.dumps({"format": FORMAT, "max_side": max_side, "preprocess": dataclasses.asdict(preprocess)},
                          sort_keys=True, default=lambda value: getattr(value, "value", str(value)))
    digest = hashlib.sha256(settings.encode())
    for path in files:
        digest.update(_file_digest(path).encode())
    return digest.hexdigest()[:32]


class ArrayCache:
    """`folder/<stem>-<key>.npz` holding one sample's image, masks and fov."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)

    def path(self, stem: str, key: str) -> Path:
        return self.folder / f"{stem}-{key}.npz"

    def get(self, stem: str, key: str) -> tuple | None:
        path = self.path(stem, key)
        if not path.is_file():
            return None
        try:
            with np.load(path) as entry:
                return entry["image"], entry["masks"], entry["fov"]
        except (OSError, ValueError, KeyError):  # a damaged entry is rebuilt
            return None

    def put(self, stem: str, key: str, image: np.ndarray, masks: np.ndarray, fov: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as stream:
                np.savez(stream, image=image, masks=masks, fov=fov)
            os.replace(temporary, self.path(stem, key))
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
