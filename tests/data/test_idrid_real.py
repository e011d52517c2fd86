"""The real IDRiD training set (../shared/data/IDRiD): the adapter's split of the full copy, and a few real
images shrunk into a throw-away copy of the official layout, read through the cache."""

from __future__ import annotations

import json
import logging

import cv2
import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from retina_seg.config import validate
from retina_seg.data.loading import list_samples, load_splits
from retina_seg.tracking import artifacts
from tests.conftest import SHARED_DATA, compose_config, isolate, run_cli, runs_in

SHARED_IDRID = SHARED_DATA / "IDRiD"
pytestmark = pytest.mark.skipif(not SHARED_IDRID.is_dir(), reason="the shared IDRiD copy (../shared/data) is absent")
PART = "a. Training Set"


def config_for(root, *overrides):
    return validate(compose_config(["data=idrid", f"data.root={root}", *overrides]))


def test_full_copy_tests_on_ten_seeded_images_and_knows_which_lack_soft_exudates():
    samples = list_samples(config_for(SHARED_IDRID).data, 42)
    assert [sum(s.split == split for s in samples) for split in ("train", "val", "test")] == [37, 7, 10]
    assert sum(s.masks[3] is None for s in samples) == 28  # 26 of 54 images have soft exudates
    assert sum(s.masks[1] is None for s in samples) == 1  # IDRiD_43 has no haemorrhage


def shrunk_copy(root, count=6, factor=8):
    """The first `count` images and their masks at 1/factor size, in the official layout without a test set."""
    source = SHARED_IDRID / "A. Segmentation"
    for number in range(1, count + 1):
        stem = f"IDRiD_{number:02d}"
        image = cv2.imread(str(source / "1. Original Images" / PART / f"{stem}.jpg"))
        size = (image.shape[1] // factor, image.shape[0] // factor)
        target = root / "A. Segmentation" / "1. Original Images" / PART / f"{stem}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(target), cv2.resize(image, size, interpolation=cv2.INTER_AREA))
        for mask in (source / "2. All Segmentation Groundtruths" / PART).glob(f"*/{stem}_*.tif"):
            pixels = np.array(Image.open(mask))  # palette TIFF: 0 background, 1 lesion
            small = cv2.resize(pixels, size, interpolation=cv2.INTER_NEAREST)
            out = root / mask.relative_to(SHARED_IDRID)
            out.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(small, mode="L").convert("P").save(out, compression="tiff_deflate")
    return root


def test_shrunk_real_images_load_split_and_come_back_from_the_cache(tmp_path, caplog):
    config = config_for(shrunk_copy(tmp_path / "idrid"), "image_size=64")
    cache = str(tmp_path / "arrays")
    splits = load_splits(config.data, config.preprocess, config.seed, cache_dir=cache)
    assert {s: len(a) for s, a in splits.items()} == {"train": 4, "val": 1, "test": 1}
    masks = [m for a in splits.values() for m in a.masks]
    assert all(m.shape == (356, 536, 4) and set(np.unique(m)) <= {0, 1} for m in masks)
    fraction = np.mean([m.mean(axis=(0, 1)) for m in masks], axis=0)
    assert fraction[2] > fraction[0] > 0  # hard exudates cover far more than microaneurysms
    with caplog.at_level(logging.INFO, logger="retina_seg.data.loading"):
        again = load_splits(config.data, config.preprocess, config.seed, cache_dir=cache)
    assert "6 of 6 samples read back, 0 decoded" in caplog.text
    assert np.array_equal(again["test"].images[0], splits["test"].images[0])


def official_layout(root):
    """The shared training set arranged as IDRiD's full official layout: IDRiD_45..54 as `b. Testing Set` (with
    their ground truths), the rest as `a. Training Set`; files are links to the shared copy."""
    source = SHARED_IDRID / "A. Segmentation"
    for image in sorted((source / "1. Original Images" / PART).glob("IDRiD_*.jpg")):
        part = "b. Testing Set" if int(image.stem.split("_")[1]) >= 45 else PART
        (root / "A. Segmentation" / "1. Original Images" / part).mkdir(parents=True, exist_ok=True)
        (root / "A. Segmentation" / "1. Original Images" / part / image.name).symlink_to(image)
        for mask in (source / "2. All Segmentation Groundtruths" / PART).glob(f"*/{image.stem}_*.tif"):
            target = root / "A. Segmentation" / "2. All Segmentation Groundtruths" / part / mask.parent.name / mask.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(mask)
    return root


@pytest.mark.slow
def test_the_recipe_runs_on_the_official_layout_and_on_the_training_only_copy(tmp_path):
    """The documented command, shortened by debug=fast to two epochs of two steps, on both copies people have:
    each trains, validates by the challenge's score and reaches the evaluation of its test split."""
    cache = f"cache_dir={tmp_path}/arrays"  # one decode of the 54 photographs serves both runs (keyed by content)
    for copy, root, test in (("official", official_layout(tmp_path / "IDRiD"), {f"IDRiD_{n}" for n in range(45, 55)}),
                             ("training only", SHARED_IDRID, None)):
        store = tmp_path / copy.replace(" ", "-")
        done = run_cli("retina_seg.run", ["+experiment=idrid_lesions", "debug=fast", "trainer.epochs=2",
                                          f"data.root={root}", *isolate(store)[:2], cache], store)
        assert done.returncode == 0, (copy, done.stderr[-2000:])
        [run] = runs_in(store)
        assert run.info.status == "FINISHED", copy
        assert run.data.params["trainer.monitor"] == "val_maupr" and "test_maupr" in run.data.metrics, copy
        history = MlflowClient(f"sqlite:///{store}/mlflow.db").get_metric_history(run.info.run_id, "val_maupr")
        assert [m.step for m in history] == [0, 1], copy
        split = json.loads((store / "hydra" / "artifacts" / artifacts.SPLIT).read_text())
        if test is not None:  # the official test set is the test split
            assert set(split["test"]) == test, copy
        else:  # the training-only copy tests on its seeded 10
            assert len(split["test"]) == 10 and set(split["test"]).isdisjoint(split["train"]), copy
