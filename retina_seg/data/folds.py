"""K-fold cross-validation splits: seeded, stratified by subgroup, over the images a dataset lets us train on.

Datasets with an official test split (DRIVE, CHASE_DB1, IDRiD, FIVES) keep it: folds divide the
official training images, the held-out fold is that fold's validation split (best epoch and
threshold) and every fold model is tested on the same official test images. Datasets without one
(STARE, HRF, synthetic, folder): the held-out fold is the test split and validation is drawn by seed
from the other folds, so every image is tested exactly once, by the one model that never saw it.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List

import numpy as np

from retina_seg.config import ConfigError
from retina_seg.data.adapters import OFFICIAL_TEST, Sample, seeded_split


@dataclass
class FoldPlan:
    """Which fold each pooled image belongs to; images outside the pool (official test) have none."""

    folds: int
    official_test: bool
    fold_of: Dict[str, int]  # image file name -> fold


def plan_folds(samples: List[Sample], dataset: str, folds: int, seed: int) -> FoldPlan:
    """Deal the pooled images into `folds` folds: within each subgroup a seeded shuffle, dealt round
    robin and continued across subgroups, so every fold gets its share of each subgroup."""
    official = dataset in OFFICIAL_TEST
    pool = [s for s in samples if not (official and s.split == "test")]
    if folds > len(pool):
        what = "official training images" if official else "images"
        raise ConfigError(f"cv.folds={folds} is invalid: expected at most {len(pool)}, the number of {what} "
                          f"of data={dataset}")
    groups: Dict[str, List[Sample]] = defaultdict(list)
    for sample in pool:
        groups[sample.subgroup or ""].append(sample)
    rng = np.random.default_rng(seed)
    fold_of, dealt = {}, 0
    for subgroup in sorted(groups):
        members = groups[subgroup]
        for index in rng.permutation(len(members)):
            fold_of[members[index].image.name] = dealt % folds
            dealt += 1
    return FoldPlan(folds, official, fold_of)


def fold_samples(samples: List[Sample], plan: FoldPlan, fold: int, val_fraction: float, seed: int) -> List[Sample]:
    """The samples with the splits of fold `fold` (see the module docstring)."""
    held_out = {name for name, k in plan.fold_of.items() if k == fold}
    if plan.official_test:
        return [s if s.split == "test" else s._replace(split="val" if s.image.name in held_out else "train")
                for s in samples]
    rest = [s.image.name for s in samples if s.image.name not in held_out]
    try:
        inner = seeded_split(rest, val_fraction, 0.0, seed + fold)
    except ConfigError as exc:
        raise ConfigError(f"cv.folds={plan.folds}: fold {fold} leaves {len(rest)} images for training and "
                          "validation, too few; use fewer folds") from exc
    return [s._replace(split="test" if s.image.name in held_out else inner[s.image.name]) for s in samples]


def split_record(samples: List[Sample]) -> Dict[str, List[str]]:
    """{split: [image stems]}: what a report or a reader needs to reproduce the split."""
    record: Dict[str, List[str]] = {"train": [], "val": [], "test": []}
    for sample in samples:
        record[sample.split].append(sample.image.stem)
    return record
