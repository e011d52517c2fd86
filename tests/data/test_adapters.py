"""Every dataset adapter reads a miniature copy of its official layout, in the real file formats."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from retina_seg.config import ConfigError, validate
from retina_seg.data.folds import split_record
from retina_seg.data.loading import DataError, list_samples, load_splits
from tests import layouts
from tests.conftest import SHARED_DATA, compose_config

SHARED_CHASE = SHARED_DATA / "CHASE_DB1"

# dataset -> (images per split train/val/test, channels)
EXPECTED = {
    "drive": ((3, 1, 4), 1),
    "chase_db1": ((16, 4, 8), 1),
    "stare": ((5, 1, 2), 1),
    "hrf": ((5, 1, 2), 1),
    "idrid": ((3, 1, 4), 4),
    "fives": ((3, 1, 4), 1),
    "folder": ((5, 1, 2), 1),
}


def config_for(name, root, *overrides):
    return validate(compose_config([f"data={name}", f"data.root={root}", "image_size=64", *overrides]))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_adapter_lists_and_loads_its_layout(name, tmp_path):
    root = layouts.BUILDERS[name](tmp_path / name)
    config = config_for(name, root, "data.sampling=resize")
    samples = list_samples(config.data, config.seed)
    counts, channels = EXPECTED[name]
    assert tuple(sum(s.split == split for s in samples) for split in ("train", "val", "test")) == counts
    assert len(config.data.channels) == channels
    splits = load_splits(config.data, config.preprocess, config.seed)
    for arrays in splits.values():
        for image, masks, fov in zip(arrays.images, arrays.masks, arrays.fov, strict=True):
            side = layouts.SIZE
            assert image.shape == (side, side, 3) and masks.shape == (side, side, channels)
            assert set(np.unique(masks)) <= {0, 1} and fov.dtype == bool and fov.mean() > 0.5
    assert sum(int(m.sum()) for m in splits["train"].masks) > 0


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_wrong_root_names_the_expected_layout(name, tmp_path):
    (tmp_path / "empty").mkdir()
    config = config_for(name, tmp_path / "empty")
    with pytest.raises(DataError, match=r"expected .*(DRIVE|CHASE_DB1|STARE|HRF|IDRiD|FIVES|images/ and masks/)"):
        list_samples(config.data, config.seed)


def test_drive_keeps_the_official_test_split(tmp_path):
    config = config_for("drive", layouts.drive(tmp_path / "drive"))
    tests = sorted(s.image.name for s in list_samples(config.data, config.seed) if s.split == "test")
    assert tests == ["01_test.tif", "02_test.tif", "03_test.tif", "04_test.tif"]


def test_chase_db1_tests_on_the_last_eight_images_against_the_first_observer(tmp_path):
    config = config_for("chase_db1", layouts.chase_db1(tmp_path / "chase"))
    samples = list_samples(config.data, config.seed)
    tests = sorted(s.image.name for s in samples if s.split == "test")
    assert tests == [f"Image_{p}{e}.jpg" for p in (11, 12, 13, 14) for e in "LR"]
    assert all(s.masks[0].name.endswith("_1stHO.png") and s.fov is None for s in samples)


def test_chase_db1_splits_children_not_eyes(tmp_path):
    """Image_NNL/Image_NNR are one child's eyes: with seed 42 children 04 and 05 each had one eye in training and
    the other in validation (picking the epoch and the threshold)."""
    root = layouts.chase_db1(tmp_path / "chase")
    for seed in (42, *range(10)):
        config = config_for("chase_db1", root, f"seed={seed}")
        samples = list_samples(config.data, config.seed)
        splits = defaultdict(set)
        for sample in samples:
            splits[sample.patient].add(sample.split)
        assert sorted(splits) == [f"child {n:02d}" for n in range(1, 15)]
        assert all(len(of_child) == 1 for of_child in splits.values()), splits
        assert [sum(s.split == split for s in samples) for split in ("train", "val", "test")] == [16, 4, 8]
    record = split_record(samples)
    assert record["patients"]["Image_04L"] == record["patients"]["Image_04R"] == "child 04"
    with pytest.raises(ConfigError, match=r"^data.official_train_count=21 is invalid: expected an even count, so that "
                                          r"both eyes of a child share a split \(child 11 would train and test\)$"):
        list_samples(config_for("chase_db1", root, "data.official_train_count=21").data, 0)


def test_idrid_missing_lesion_file_is_an_empty_channel(tmp_path):
    config = config_for("idrid", layouts.idrid(tmp_path / "idrid"), "data.sampling=resize")
    [sample] = [s for s in list_samples(config.data, config.seed) if s.image.stem == "IDRiD_02"]
    assert sample.masks[3] is None and sample.masks[0] is not None


def test_idrid_lesion_missing_everywhere_names_the_lesion(tmp_path):
    skip = tuple((f"IDRiD_{n:02d}", "SE") for n in range(1, 9))
    config = config_for("idrid", layouts.idrid(tmp_path / "idrid", skip=skip))
    with pytest.raises(DataError, match=r"IDRiD lesion SE: no ground truth file for any image"):
        list_samples(config.data, config.seed)


@pytest.mark.parametrize("labels", [".pgm", ".pbm", ".pnm"])
def test_stare_labels_in_any_netpbm_format_plain_or_gzipped(labels, tmp_path):
    """Widespread STARE copies have greyscale `labels-ah/im0001.ah.pgm` (half of them gzipped here)."""
    root = layouts.stare(tmp_path / "stare", labels=labels)
    assert {p.name.split(".", 2)[-1] for p in (root / "labels-ah").iterdir()} == {labels[1:], f"{labels[1:]}.gz"}
    config = config_for("stare", root, "data.sampling=resize")
    samples = list_samples(config.data, config.seed)
    assert sorted(s.masks[0].name for s in samples)[:2] == [f"im0001.ah{labels}.gz", f"im0002.ah{labels}"]
    splits = load_splits(config.data, config.preprocess, config.seed)
    for arrays in splits.values():
        for name, masks in zip(arrays.names, arrays.masks, strict=True):
            truth = layouts._fundus(int(name[2:6])).vessels  # the label as it was drawn
            np.testing.assert_array_equal(masks[..., 0], truth)


def test_image_without_mask_names_the_file(tmp_path):
    root = layouts.folder(tmp_path / "own")
    (root / "masks" / "case3.png").unlink()
    config = config_for("folder", root)
    with pytest.raises(DataError, match=r"case3.png: no mask in '.*masks' with the same name"):
        list_samples(config.data, config.seed)


def test_empty_folder_says_what_is_missing(tmp_path):
    (tmp_path / "own" / "images").mkdir(parents=True)
    (tmp_path / "own" / "masks").mkdir()
    config = config_for("folder", tmp_path / "own")
    with pytest.raises(DataError, match=r"holds no files named like"):
        list_samples(config.data, config.seed)


@pytest.mark.skipif(not SHARED_CHASE.is_dir(), reason="the shared CHASE_DB1 copy (../shared/data) is absent")
def test_real_chase_db1_copy():
    config = config_for("chase_db1", SHARED_CHASE, "data.sampling=patches")
    samples = list_samples(config.data, config.seed)
    assert len(samples) == 28
    assert [sum(s.split == split for s in samples) for split in ("train", "val", "test")] == [16, 4, 8]
    splits = load_splits(config.data, config.preprocess, config.seed)
    image, mask, fov = splits["test"].images[0], splits["test"].masks[0], splits["test"].fov[0]
    assert image.shape == (960, 999, 3) and mask.shape == (960, 999, 1)
    assert 0.55 < fov.mean() < 0.9  # a circular field of view on a dark background, derived
    assert 0.05 < mask[fov].mean() < 0.15 and not mask[~fov].any()
