"""Listing, splitting and reading samples, and the one-line errors for files that cannot be used."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from retina_seg.config import ConfigError, validate
from retina_seg.data import DataError, Sample, load_arrays, load_splits, seeded_split
from tests.conftest import compose_config


def data_config(tmp_path, *overrides):
    return validate(compose_config([f"data.root={tmp_path}", "image_size=64", "data.num_images=10", *overrides])).data


def test_seeded_split_is_disjoint_complete_and_repeatable():
    stems = [f"{i:02d}" for i in range(20)]
    split = seeded_split(stems, 0.15, 0.2, seed=1)
    assert sorted(split) == stems
    assert [list(split.values()).count(s) for s in ("train", "val", "test")] == [13, 3, 4]
    assert seeded_split(stems, 0.15, 0.2, seed=1) == split
    assert seeded_split(stems, 0.15, 0.2, seed=2) != split


def test_synthetic_splits_load_as_arrays(tmp_path):
    splits = load_splits(data_config(tmp_path), size=64, seed=3)
    assert sum(len(a) for a in splits.values()) == 10
    train = splits["train"]
    assert train.images.shape[1:] == (64, 64, 3) and train.images.dtype == np.uint8
    assert train.masks.shape[1:] == (64, 64, 1) and set(np.unique(train.masks)) == {0, 1}
    assert train.fov.dtype == bool and train.fov[:, 32, 32].all()


def test_lesion_task_has_one_channel_per_lesion_type(tmp_path):
    data = data_config(tmp_path, "data.task=lesions", "data.lesion_types=[MA,EX]")
    assert data.channels == ["MA", "EX"]
    assert load_splits(data, size=64, seed=3)["test"].masks.shape[-1] == 2


def test_unknown_synthetic_lesion_type_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match=r"data.lesion_types has \['OD'\]"):
        load_splits(data_config(tmp_path, "data.task=lesions", "data.lesion_types=[MA,OD]"), size=64, seed=3)


def write(path, pixels):
    assert cv2.imwrite(str(path), pixels)
    return path


def test_mask_of_another_size_names_the_file(tmp_path):
    image = write(tmp_path / "a.png", np.zeros((32, 32, 3), np.uint8))
    mask = write(tmp_path / "a_mask.png", np.zeros((16, 32), np.uint8))
    with pytest.raises(DataError, match=r"a_mask.png: mask is 32x16 but its image a.png is 32x32"):
        load_arrays([Sample(image, (mask,), None, "train")], size=32)


def test_non_binary_mask_names_the_file(tmp_path):
    image = write(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    mask = write(tmp_path / "grey.png", np.arange(64, dtype=np.uint8).reshape(8, 8))
    with pytest.raises(DataError, match=r"grey.png: mask is not binary"):
        load_arrays([Sample(image, (mask,), None, "train")], size=8)


def test_truncated_image_names_the_file(tmp_path):
    image = write(tmp_path / "a.png", np.full((64, 64, 3), 128, np.uint8))
    image.write_bytes(image.read_bytes()[:40])
    with pytest.raises(DataError, match=r"a.png: unreadable image"):
        load_arrays([Sample(image, (None,), None, "train")], size=64)


def test_missing_mask_channel_is_empty_and_fov_defaults_to_whole_image(tmp_path):
    image = write(tmp_path / "a.png", np.full((8, 8, 3), 9, np.uint8))
    arrays = load_arrays([Sample(image, (None,), None, "test")], size=8)
    assert arrays.masks.sum() == 0 and arrays.fov.all() and arrays.names == ["a"]
