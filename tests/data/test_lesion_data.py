"""IDRiD lesion data: the seeded test split of a copy without its test set, the decoded-array cache,
per-class patch sampling and the bad inputs that must stop a run before training."""

from __future__ import annotations

import logging
import shutil

import cv2
import numpy as np
import pytest

from retina_seg.config import ConfigError, validate
from retina_seg.data.loading import Arrays, DataError, list_samples, load_arrays, load_splits
from retina_seg.data.pipeline import ExampleMaker
from tests import layouts
from tests.conftest import compose_config

TRUTHS = "A. Segmentation/2. All Segmentation Groundtruths/a. Training Set"


def training_only(root, per_split=6):
    """The official layout without `b. Testing Set`, like the shared copy."""
    layouts.idrid(root, per_split=per_split)
    for kind in ("1. Original Images", "2. All Segmentation Groundtruths"):
        shutil.rmtree(root / "A. Segmentation" / kind / "b. Testing Set")
    return root


def idrid_config(root, *overrides):
    return validate(compose_config(["data=idrid", f"data.root={root}", "image_size=32", *overrides]))


def splits_of(samples):
    return {split: sorted(s.image.stem for s in samples if s.split == split) for split in ("train", "val", "test")}


def test_without_the_official_test_set_a_seeded_test_split_is_taken_and_logged_once(tmp_path, caplog):
    root = training_only(tmp_path / "idrid", per_split=11)
    with caplog.at_level(logging.INFO, logger="retina_seg.data.adapters"):
        first = splits_of(list_samples(idrid_config(root).data, 42))
    assert [len(first[s]) for s in ("train", "val", "test")] == [8, 1, 2]  # 11 images: 18.5% test, 15% of the rest val
    assert first == splits_of(list_samples(idrid_config(root).data, 42))
    assert splits_of(list_samples(idrid_config(root).data, 7))["test"] != first["test"]
    [message] = [r.getMessage() for r in caplog.records if "b. Testing Set" in r.getMessage()]
    assert "testing on 2 of the 11 training images (seed 42)" in message and first["test"][0] in message


def test_cache_reads_back_and_is_invalidated_by_file_content_and_preprocessing(tmp_path, caplog):
    root = training_only(tmp_path / "idrid", per_split=3)
    config = idrid_config(root)
    samples = list_samples(config.data, config.seed)
    cache = tmp_path / "arrays"
    first = load_arrays(samples, config.preprocess, cache_dir=str(cache))
    assert len(list(cache.glob("*.npz"))) == 3
    with caplog.at_level(logging.INFO, logger="retina_seg.data.loading"):
        again = load_arrays(samples, config.preprocess, cache_dir=str(cache))
    assert "3 of 3 samples read back, 0 decoded" in caplog.text
    for a, b in zip(first.images + first.masks + first.fov, again.images + again.masks + again.fov, strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)

    mask = root / TRUTHS / "3. Hard Exudates" / "IDRiD_01_EX.tif"
    edited = np.zeros((layouts.SIZE, layouts.SIZE, 3), np.uint8)
    edited[5:9, 5:9, 0] = 255
    assert cv2.imwrite(str(mask), edited)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="retina_seg.data.loading"):
        changed = load_arrays(samples, config.preprocess, cache_dir=str(cache))
    assert "2 of 3 samples read back, 1 decoded" in caplog.text
    assert changed.masks[0][..., 2].sum() == 16  # the edited file, not the stale entry

    caplog.clear()
    with caplog.at_level(logging.INFO, logger="retina_seg.data.loading"):
        clahe = load_arrays(samples, idrid_config(root, "preprocess.clahe=true").preprocess, cache_dir=str(cache))
    assert "0 of 3 samples read back, 3 decoded" in caplog.text
    assert not np.array_equal(clahe.images[1], first.images[1])
    assert len(list(cache.glob("*.npz"))) == 7


def arrays_with(masks):
    images = [np.full((*m.shape[:2], 3), 100, np.uint8) for m in masks]
    return Arrays(images=images, masks=masks, fov=[np.ones(m.shape[:2], bool) for m in masks],
                  names=[str(i) for i in range(len(masks))])


def test_class_shares_centre_patches_on_rare_classes_from_images_that_have_them():
    masks = [np.zeros((200, 200, 2), np.uint8) for _ in range(4)]
    masks[3][150, 40, 0] = 1  # class 0: one pixel in one image of four
    for m in masks:
        m[20:60, 100:180, 1] = 1
    maker = ExampleMaker(arrays_with(masks), 32, True, 0.0, None, seed=5, class_shares=[0.5, 0.0])
    hits = 0
    for draw in range(400):
        _, patch = maker(draw % 4, draw)
        hits += int(patch[16, 16, 0])  # the rare pixel sits at the patch centre
    assert 160 < hits < 240  # about half the patches, although three of four images lack the class
    plain = ExampleMaker(arrays_with(masks), 32, True, 0.5, None, seed=5)
    assert sum(int(plain(d % 4, d)[1][..., 0].any()) for d in range(400)) < 40


def test_class_shares_are_checked_against_the_channels():
    with pytest.raises(ConfigError, match=r"data.class_shares=\['OD'\] is invalid: expected keys among the channels"):
        validate(compose_config(["data=idrid", "data.root=x", "+data.class_shares.OD=0.2"]))
    with pytest.raises(ConfigError, match=r"data.class_shares=.* expected shares >= 0 summing to at most 1"):
        validate(compose_config(["data=idrid", "data.root=x", "+data.class_shares.MA=0.6",
                                 "+data.class_shares.HE=0.6"]))
    with pytest.raises(ConfigError, match=r"loss.positive_weights=\[1.0, 2.0\] is invalid: expected empty or one "
                                          r"weight per channel \['MA', 'HE', 'EX', 'SE'\]"):
        validate(compose_config(["data=idrid", "data.root=x", "loss=bce_dice", "loss.positive_weights=[1, 2]"]))


def bad(root, case):
    folder = root / TRUTHS
    if case == "lesion type":
        return ["data.lesion_types=[MA,CW]"], ConfigError, r"data.lesion_types has \['CW'\]: IDRiD provides"
    if case == "mask size":
        cv2.imwrite(str(folder / "2. Haemorrhages" / "IDRiD_02_HE.tif"), np.zeros((40, 48), np.uint8))
        return [], DataError, r"IDRiD_02_HE.tif: mask is 48x40 but its image IDRiD_02.jpg is 48x48"
    if case == "no masks":
        for path in folder.glob("*/IDRiD_03_*.tif"):
            path.unlink()
        return [], DataError, r"IDRiD_03.jpg: no ground truth file for any lesion type under"
    grey = np.tile(np.arange(48, dtype=np.uint8)[None] * 5, (48, 1))
    cv2.imwrite(str(folder / "1. Microaneurysms" / "IDRiD_01_MA.tif"), grey)
    return [], DataError, r"IDRiD_01_MA.tif: mask is not binary \(48 grey levels"


@pytest.mark.parametrize("case", ["lesion type", "mask size", "no masks", "non-binary mask"])
def test_bad_idrid_input_is_one_line_naming_the_file(tmp_path, case):
    root = training_only(tmp_path / "idrid", per_split=6)
    overrides, error, message = bad(root, case)
    with pytest.raises(error, match=message) as caught:
        config = idrid_config(root, *overrides)
        load_splits(config.data, config.preprocess, config.seed)
    assert "\n" not in str(caught.value)
