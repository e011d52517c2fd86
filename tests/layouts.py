"""Miniature copies of the public datasets' official layouts: real file formats, small synthetic pixels."""

from __future__ import annotations

import gzip
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from retina_seg.data.synthetic import generate_fundus

SIZE = 48


def _fundus(seed: int):
    return generate_fundus(SIZE, np.random.default_rng(seed))


def _save(path: Path, pixels: np.ndarray) -> None:
    """RGB or single-channel pixels to `path` in the format its name says (.gif and 1-bit via Pillow)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if ".ppm" in path.name.lower() and pixels.ndim == 2:  # PPM is colour only, as STARE's labels are
        pixels = np.repeat(pixels[..., None], 3, axis=-1)
    if path.suffix.lower() == ".gif":
        Image.fromarray(pixels).convert("P").save(path)
    elif path.suffix.lower() == ".gz":  # a gzipped Netpbm file (STARE is distributed so)
        ok, raw = cv2.imencode(Path(path.stem).suffix, cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR) if pixels.ndim == 3
                               else pixels)
        assert ok
        path.write_bytes(gzip.compress(raw.tobytes()))
    else:
        assert cv2.imwrite(str(path), cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR) if pixels.ndim == 3 else pixels)


def drive(root: Path, per_split: int = 4) -> Path:
    for part, first in (("training", 21), ("test", 1)):
        for number in range(first, first + per_split):
            f = _fundus(number)
            _save(root / part / "images" / f"{number:02d}_{part}.tif", f.image)
            _save(root / part / "1st_manual" / f"{number:02d}_manual1.gif", f.vessels * 255)
            _save(root / part / "mask" / f"{number:02d}_{part}_mask.gif", f.fov * 255)
            if part == "test":  # the second observer annotated the test images only
                _save(root / part / "2nd_manual" / f"{number:02d}_manual2.gif", second_observer(f.vessels) * 255)
    return root


def second_observer(vessels: np.ndarray) -> np.ndarray:
    """Another annotator's vessels: the same tree drawn one pixel to the right (F1 well below 1)."""
    return np.roll(vessels, 1, axis=1)


def chase_db1(root: Path, patients: int = 14) -> Path:
    for patient in range(1, patients + 1):
        for eye in "LR":
            f = _fundus(patient * 2 + (eye == "R"))
            _save(root / f"Image_{patient:02d}{eye}.jpg", f.image)
            Image.fromarray(f.vessels * 255).convert("1").save(root / f"Image_{patient:02d}{eye}_1stHO.png")
            Image.fromarray(second_observer(f.vessels) * 255).convert("1").save(
                root / f"Image_{patient:02d}{eye}_2ndHO.png")
    return root


def stare(root: Path, count: int = 8, labels: str = ".ppm") -> Path:
    """`labels`: the Netpbm format of the label files (widespread copies have greyscale `.pgm` ones)."""
    for number in range(1, count + 1):
        f = _fundus(number)
        gz = ".gz" if number % 2 else ""  # distributed gzipped; many users unpack them
        _save(root / "stare-images" / f"im{number:04d}.ppm{gz}", f.image)
        _save(root / "labels-ah" / f"im{number:04d}.ah{labels}{gz}", f.vessels * 255)
    return root


def hrf(root: Path) -> Path:
    for number, kind in enumerate(("dr", "g", "h", "dr", "g", "h", "dr", "g"), start=1):
        f = _fundus(number)
        suffix = ".JPG" if number % 2 else ".jpg"  # the official archive mixes the case
        _save(root / "images" / f"{number:02d}_{kind}{suffix}", f.image)
        _save(root / "manual1" / f"{number:02d}_{kind}.tif", f.vessels * 255)
        _save(root / "mask" / f"{number:02d}_{kind}_mask.tif", f.fov * 255)
    return root


IDRID_DIRS = {"MA": "1. Microaneurysms", "HE": "2. Haemorrhages", "EX": "3. Hard Exudates",
              "SE": "4. Soft Exudates", "OD": "5. Optic Disc"}


def idrid(root: Path, per_split: int = 4, skip: tuple = (("IDRiD_02", "SE"),)) -> Path:
    """Lesion masks as red-on-black RGB TIFFs, as shipped; (image, lesion) pairs in `skip` have no file."""
    base = root / "A. Segmentation"
    number = 1
    for part in ("a. Training Set", "b. Testing Set"):
        for _ in range(per_split):
            f = _fundus(number)
            stem = f"IDRiD_{number:02d}"
            _save(base / "1. Original Images" / part / f"{stem}.jpg", f.image)
            for index, (name, folder) in enumerate(IDRID_DIRS.items()):
                if (stem, name) in skip:
                    continue
                lesion = f.lesions.get(name, np.roll(f.vessels, index, axis=0))
                red = np.zeros((*lesion.shape, 3), np.uint8)
                red[..., 0] = lesion * 255
                _save(base / "2. All Segmentation Groundtruths" / part / folder / f"{stem}_{name}.tif", red)
            number += 1
    return root


def fives(root: Path, per_split: int = 4) -> Path:
    for split in ("train", "test"):
        for number in range(1, per_split + 1):
            f = _fundus(number + (split == "test") * 100)
            name = f"{number}_{'ADGN'[number % 4]}.png"
            _save(root / split / "Original" / name, f.image)
            _save(root / split / "Ground truth" / name, f.vessels * 255)
    return root


def folder(root: Path, count: int = 8) -> Path:
    for number in range(count):
        f = _fundus(number)
        _save(root / "images" / f"case{number}.png", f.image)
        _save(root / "masks" / f"case{number}.png", f.vessels)  # 0/1 masks, as many tools write them
        if number % 2:
            _save(root / "fov" / f"case{number}.png", f.fov * 255)
    return root


BUILDERS = {"drive": drive, "chase_db1": chase_db1, "stare": stare, "hrf": hrf, "idrid": idrid, "fives": fives,
            "folder": folder}


def folder_with_bad_files(root: Path) -> dict:
    """A `folder` layout with one file of each kind that must be caught before training; returns
    {file name: the problem its error line names}."""
    folder(root)

    def truncate(path: Path, pixels: np.ndarray) -> None:
        _save(path, pixels)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    (root / "images" / "case0.png").unlink()
    truncate(root / "images" / "case0.jpg", _fundus(0).image)  # OpenCV decodes this one silently, half grey
    truncate(root / "masks" / "case1.png", _fundus(1).vessels * 255)
    (root / "masks" / "case2.png").unlink()
    truncate(root / "masks" / "case2.tif", _fundus(2).vessels * 255)
    (root / "images" / "case3.png").write_bytes(b"")
    _save(root / "masks" / "case4.png", np.zeros((SIZE // 2, SIZE), np.uint8))
    return {"case0.jpg": "truncated or corrupt JPEG", "case1.png": "unreadable mask", "case2.tif": "unreadable mask",
            "case3.png": "empty file (0 bytes)", "case4.png": f"mask is {SIZE}x{SIZE // 2} but its image"}
