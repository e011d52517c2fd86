"""Cross-validation folds: seeded, stratified by subgroup, and respectful of official test splits."""

from __future__ import annotations

from collections import Counter

import pytest

from retina_seg.config import ConfigError, validate
from retina_seg.data.folds import fold_samples, plan_folds, split_record
from retina_seg.data.loading import list_samples
from tests import layouts
from tests.conftest import compose_config


def samples_of(name, root, *overrides):
    config = validate(compose_config([f"data={name}", f"data.root={root}", *overrides]))
    return config, list_samples(config.data, config.seed)


def test_hrf_folds_hold_out_every_image_once_and_are_stratified_by_subgroup(tmp_path):
    config, samples = samples_of("hrf", layouts.hrf(tmp_path / "HRF"))
    assert Counter(s.subgroup for s in samples) == {"diabetic_retinopathy": 3, "glaucoma": 3, "healthy": 2}
    plan = plan_folds(samples, "hrf", 2, seed=7)
    assert plan == plan_folds(samples, "hrf", 2, seed=7) and plan != plan_folds(samples, "hrf", 2, seed=8)
    tested = []
    for fold in range(2):
        split = fold_samples(samples, plan, fold, config.data.val_fraction, seed=7)
        test = [s for s in split if s.split == "test"]
        tested += [s.image.name for s in test]
        # three DR and three glaucoma images cannot split evenly, but no fold takes all of one subgroup
        assert all(1 <= n <= 2 for n in Counter(s.subgroup for s in test).values())
        assert {s.split for s in split} == {"train", "val", "test"}
    assert sorted(tested) == sorted(s.image.name for s in samples)


def test_official_test_split_stays_and_folds_divide_the_training_images(tmp_path):
    config, samples = samples_of("chase_db1", layouts.chase_db1(tmp_path / "CHASE"))
    official_test = {s.image.name for s in samples if s.split == "test"}
    plan = plan_folds(samples, "chase_db1", 5, seed=1)
    assert set(plan.fold_of).isdisjoint(official_test) and len(plan.fold_of) == 20
    held_out = []
    for fold in range(5):
        split = fold_samples(samples, plan, fold, config.data.val_fraction, seed=1)
        assert {s.image.name for s in split if s.split == "test"} == official_test
        held_out += [s.image.name for s in split if s.split == "val"]
        record = split_record(split)
        assert len(record["val"]) == 4  # both eyes of two children
        assert {record["patients"][stem] for stem in record["val"]}.isdisjoint(
            record["patients"][stem] for stem in record["train"])
    assert sorted(held_out) == sorted(plan.fold_of)
    with pytest.raises(ConfigError, match=r"cv.folds=11 is invalid: expected at most 10, the number of patients in "
                                          r"the official training images of data=chase_db1"):
        plan_folds(samples, "chase_db1", 11, seed=1)


def test_too_many_folds_and_a_fold_count_of_one_are_refused(tmp_path):
    _, samples = samples_of("stare", layouts.stare(tmp_path / "STARE"))
    with pytest.raises(ConfigError, match=r"cv.folds=9 is invalid: expected at most 8, the number of images"):
        plan_folds(samples, "stare", 9, seed=0)
    pair = samples[:2]
    with pytest.raises(ConfigError, match=r"fold 0 leaves 1 images .* use fewer folds"):
        fold_samples(pair, plan_folds(pair, "stare", 2, seed=0), 0, 0.15, seed=0)
    with pytest.raises(ConfigError, match=r"cv.folds=1 is invalid: expected 0 \(off\) or an integer >= 2"):
        validate(compose_config(["cv.folds=1"]))
