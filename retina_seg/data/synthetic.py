"""A procedural fundus generator: the built-in, offline dataset with exact ground truth.

Each image has a circular field of view on a dark background, an orange-red retina with radial
brightness falloff, a bright optic disc, a darker macula, a branching tortuous vessel tree whose
widths run from ~6 px down to 1 px, optional lesions (microaneurysms, haemorrhages, hard exudates),
camera blur and sensor noise. Vessels are rendered at 2x and area-downsampled, so thin vessels are
faint partial-volume lines, as in real photographs; a pixel is vessel in the mask when at least half
of it is covered. Everything is deterministic by seed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

GENERATOR_VERSION = 1
LESION_TYPES = ("MA", "HE", "EX")
SUPERSAMPLE = 2


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate; the cache folder name is derived from it, so a change regenerates."""

    num_images: int
    size: int
    seed: int

    @property
    def key(self) -> str:
        text = f"v{GENERATOR_VERSION}-n{self.num_images}-s{self.size}-seed{self.seed}"
        return f"{text}-{hashlib.sha1(text.encode()).hexdigest()[:8]}"


def ensure_dataset(root: str | Path, spec: SyntheticSpec) -> Path:
    """Return the folder holding the generated PNGs, generating it once (atomically) if missing."""
    target = Path(root) / spec.key
    if (target / "complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=target.parent))
    try:
        for sub in ("images", "masks", "fov", "lesions"):
            (staging / sub).mkdir()
        rng = np.random.default_rng(spec.seed)
        for index in tqdm(range(spec.num_images), desc="generating synthetic fundus images", unit="image",
                          disable=None, leave=False):
            fundus = generate_fundus(spec.size, rng)
            stem = f"{index:03d}"
            cv2.imwrite(str(staging / "images" / f"{stem}.png"), cv2.cvtColor(fundus.image, cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(staging / "masks" / f"{stem}.png"), fundus.vessels * 255)
            cv2.imwrite(str(staging / "fov" / f"{stem}.png"), fundus.fov * 255)
            for name, mask in fundus.lesions.items():
                cv2.imwrite(str(staging / "lesions" / f"{stem}_{name}.png"), mask * 255)
        (staging / "complete").touch()
        try:
            os.rename(staging, target)
        except OSError:  # another process finished the same dataset first
            if not (target / "complete").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


@dataclass
class Fundus:
    """One generated fundus: RGB uint8 image (H, W, 3) and uint8 {0, 1} masks (H, W)."""

    image: np.ndarray
    vessels: np.ndarray
    fov: np.ndarray
    lesions: dict[str, np.ndarray]


def generate_fundus(size: int, rng: np.random.Generator) -> Fundus:
    """Draw one synthetic fundus photograph of `size` x `size` pixels with its exact masks."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    centre = size / 2
    radius = size * rng.uniform(0.45, 0.48)
    dist = np.hypot(xx - centre, yy - centre) / radius
    fov = (dist <= 1.0).astype(np.uint8)

    side = rng.choice([-1, 1])  # left or right eye: optic disc on the nasal side
    disc = (centre + side * radius * rng.uniform(0.35, 0.5), centre + radius * rng.uniform(-0.1, 0.1))
    macula = (centre - side * radius * rng.uniform(0.15, 0.25), centre + radius * rng.uniform(-0.05, 0.05))

    image = _background(size, dist, rng)
    _add_spot(image, xx, yy, macula, radius * 0.18, np.array([-0.25, -0.3, -0.3]))
    _add_spot(image, xx, yy, disc, radius * 0.11, np.array([0.35, 0.55, 0.45]))

    coverage = _vessel_coverage(size, disc, radius, rng)
    contrast = np.array([0.25, 0.55, 0.45], dtype=np.float32) * rng.uniform(0.8, 1.1)
    image *= 1.0 - coverage[..., None] * contrast
    vessels = (coverage >= 0.5).astype(np.uint8)

    lesions = _draw_lesions(image, size, radius, dist, rng)

    image = cv2.GaussianBlur(image, (0, 0), sigmaX=0.6)
    image += rng.normal(0, 0.015, image.shape).astype(np.float32)
    image *= fov[..., None]
    image = np.clip(image * 255, 0, 255).astype(np.uint8)
    return Fundus(image=image, vessels=vessels * fov, fov=fov,
                  lesions={name: mask * fov for name, mask in lesions.items()})


def _background(size: int, dist: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Orange-red retina with brightness falloff towards the rim and a faint choroidal texture."""
    base = np.array([0.78, 0.38, 0.16], dtype=np.float32) * rng.uniform(0.85, 1.15, 3).astype(np.float32)
    falloff = np.clip(1.0 - 0.45 * dist**2, 0.35, 1.0)
    texture = cv2.resize(rng.normal(0, 1, (12, 12)).astype(np.float32), (size, size),
                         interpolation=cv2.INTER_CUBIC)
    image = base * falloff[..., None] * (1.0 + 0.05 * texture[..., None])
    return image.astype(np.float32)


def _add_spot(image, xx, yy, centre, sigma, tint) -> None:
    weight = np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / (2 * sigma**2))
    image *= 1.0 + weight[..., None] * tint.astype(np.float32)


def _vessel_coverage(size: int, disc, radius: float, rng: np.random.Generator) -> np.ndarray:
    """Fraction of each pixel covered by vessels, from a tree drawn at 2x and area-downsampled."""
    big = size * SUPERSAMPLE
    canvas = np.zeros((big, big), np.uint8)
    start = np.array(disc, dtype=np.float64) * SUPERSAMPLE
    scale = size / 256.0
    for angle in rng.uniform(0, 2 * np.pi) + np.linspace(0, 2 * np.pi, rng.integers(4, 7), endpoint=False):
        width = rng.uniform(8.0, 12.0) * scale * SUPERSAMPLE / 2
        _grow_branch(canvas, start, angle + rng.normal(0, 0.3), width, radius * SUPERSAMPLE, big, rng)
    return cv2.resize(canvas.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)


def _grow_branch(canvas, point, angle, width, reach, big, rng, depth=0) -> None:
    """Random-walk a vessel outwards, thinning as it goes and spawning thinner side branches."""
    centre = big / 2
    step = 3.0
    curvature = rng.normal(0, 0.02)
    while width >= 1.0:
        angle += curvature + rng.normal(0, 0.08)  # tortuosity
        nxt = point + step * np.array([np.cos(angle), np.sin(angle)])
        if np.hypot(*(nxt - centre)) > reach:
            return
        cv2.line(canvas, tuple(np.round(point).astype(int)), tuple(np.round(nxt).astype(int)), 1,
                 thickness=max(1, int(round(width))), lineType=cv2.LINE_8)
        point = nxt
        width *= rng.uniform(0.985, 0.996)
        if depth < 6 and rng.random() < 0.03:
            child_angle = angle + rng.choice([-1, 1]) * rng.uniform(0.5, 1.1)
            _grow_branch(canvas, point.copy(), child_angle, width * rng.uniform(0.45, 0.75), reach, big, rng,
                         depth + 1)
            width *= 0.9


def _draw_lesions(image, size, radius, dist, rng) -> dict[str, np.ndarray]:
    """Microaneurysms (tiny dark dots), haemorrhages (dark blotches), hard exudates (bright yellow)."""
    looks = {  # (count range, radius range in px at 256, colour multiplier)
        "MA": ((0, 8), (1.0, 2.0), np.array([0.55, 0.35, 0.4])),
        "HE": ((0, 4), (3.0, 7.0), np.array([0.5, 0.3, 0.35])),
        "EX": ((0, 10), (1.0, 3.5), np.array([1.35, 1.9, 1.1])),
    }
    scale = size / 256.0
    masks = {}
    centre = size / 2
    for name in LESION_TYPES:
        (low, high), (rmin, rmax), colour = looks[name]
        mask = np.zeros((size, size), np.uint8)
        for _ in range(rng.integers(low, high + 1)):
            r, theta = radius * 0.8 * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
            point = (int(centre + r * np.cos(theta)), int(centre + r * np.sin(theta)))
            axes = tuple(max(1, int(round(rng.uniform(rmin, rmax) * scale))) for _ in range(2))
            cv2.ellipse(mask, point, axes, rng.uniform(0, 180), 0, 360, 1, thickness=-1)
        image[mask > 0] *= colour.astype(np.float32)
        masks[name] = mask
    return masks
