"""The built-in dataset: real PNG files, deterministic by seed, exact masks, and a non-trivial task."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from retina_seg.data.synthetic import LESION_TYPES, SyntheticSpec, ensure_dataset, generate_fundus


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return ensure_dataset(tmp_path_factory.mktemp("synthetic"), SyntheticSpec(num_images=4, size=128, seed=7))


def test_writes_real_png_files(folder):
    for sub in ("images", "masks", "fov"):
        files = sorted((folder / sub).glob("*.png"))
        assert [f.stem for f in files] == ["000", "001", "002", "003"]
        assert files[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((folder / "lesions").glob("*.png"))) == 4 * len(LESION_TYPES)
    image = cv2.imread(str(folder / "images" / "000.png"))
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8


def test_same_seed_same_bytes_other_seed_other_images(folder, tmp_path):
    again = ensure_dataset(tmp_path, SyntheticSpec(num_images=4, size=128, seed=7))
    other = ensure_dataset(tmp_path, SyntheticSpec(num_images=4, size=128, seed=8))
    for sub in ("images/001.png", "masks/001.png", "lesions/001_EX.png"):
        assert (again / sub).read_bytes() == (folder / sub).read_bytes()
    assert (other / "images/001.png").read_bytes() != (folder / "images/001.png").read_bytes()


def test_masks_are_binary_and_inside_a_circular_fov(folder):
    for stem in ("000", "003"):
        fov = cv2.imread(str(folder / "fov" / f"{stem}.png"), cv2.IMREAD_GRAYSCALE)
        vessels = cv2.imread(str(folder / "masks" / f"{stem}.png"), cv2.IMREAD_GRAYSCALE)
        assert set(np.unique(vessels)) == {0, 255} and set(np.unique(fov)) == {0, 255}
        assert not np.any((vessels > 0) & (fov == 0))
        assert fov[64, 64] == 255 and fov[0, 0] == 0 and fov[0, 127] == 0
        image = cv2.imread(str(folder / "images" / f"{stem}.png"))
        assert image[fov == 0].max() == 0  # dark background outside the field of view


def test_vessels_are_a_learnable_but_not_trivial_task():
    fundus = generate_fundus(256, np.random.default_rng(3))
    inside = fundus.fov > 0
    share = fundus.vessels[inside].mean()
    assert 0.04 < share < 0.3
    # vessels of 1-2 px exist: vessel pixels whose distance to the background is at most 1
    distance = cv2.distanceTransform(fundus.vessels, cv2.DIST_L2, 3)
    thin = (distance[fundus.vessels > 0] <= 1.0).mean()
    assert thin > 0.3
    # and they are visible: darker than the retina around them in the green channel
    green = fundus.image[..., 1].astype(float)
    assert green[(fundus.vessels > 0) & inside].mean() < 0.85 * green[(fundus.vessels == 0) & inside].mean()


def test_lesions_have_their_own_exact_masks():
    rng = np.random.default_rng(11)
    counts = {name: 0 for name in LESION_TYPES}
    for _ in range(6):
        fundus = generate_fundus(128, rng)
        for name, mask in fundus.lesions.items():
            assert set(np.unique(mask)) <= {0, 1}
            counts[name] += int(mask.sum())
    assert all(count > 0 for count in counts.values()), counts
