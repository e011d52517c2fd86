"""K-fold cross-validation splits: seeded, by patient, stratified by subgroup, over the images a dataset lets us
train on (a patient's images, e.g. a CHASE_DB1 child's two eyes, are always in one fold).

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
    """Deal the pooled images into `folds` folds, whole patients at a time: within each subgroup a seeded
    shuffle of its patients, dealt round robin and continued across subgroups, so every fold gets its share of
    each subgroup (with one image per patient: the images themselves, as before patients were known)."""
    official = dataset in OFFICIAL_TEST
    pool = [s for s in samples if not (official and s.split == "test")]
    images: Dict[str, List[Sample]] = defaultdict(list)  # patient -> images, in order of first appearance
    for sample in pool:
        images[sample.person].append(sample)
    if folds > len(images):
        what = ("patients in the " if len(images) < len(pool) else "") + (
            "official training images" if official else "images")
        raise ConfigError(f"cv.folds={folds} is invalid: expected at most {len(images)}, the number of {what} "
                          f"of data={dataset}")
    groups: Dict[str, List[str]] = defaultdict(list)  # subgroup -> patients (a patient's first image decides)
    for patient, of_patient in images.items():
        groups[of_patient[0].subgroup or ""].append(patient)
    rng = np.random.default_rng(seed)
    fold_of, dealt = {}, 0
    for subgroup in sorted(groups):
        members = groups[subgroup]
        for index in rng.permutation(len(members)):
            fold_of.update({sample.image.name: dealt % folds for sample in images[members[index]]})
            dealt += 1
    return FoldPlan(folds, official, fold_of)


def fold_samples(samples: List[Sample], plan: FoldPlan, fold: int, val_fraction: float, seed: int) -> List[Sample]:
    """The samples with the splits of fold `fold` (see the module docstring)."""
    held_out = {name for name, k in plan.fold_of.items() if k == fold}
    if plan.official_test:
        return [s if s.split == "test" else s._replace(split="val" if s.image.name in held_out else "train")
                for s in samples]
    rest = [s for s in samples if s.image.name not in held_out]
    try:
        inner = seeded_split([s.image.name for s in rest], [s.person for s in rest], val_fraction, 0.0, seed + fold)
    except ConfigError as exc:
        raise ConfigError(f"cv.folds={plan.folds}: fold {fold} leaves {len(rest)} images for training and "
                          "validation, too few; use fewer folds") from exc
    return [s._replace(split="test" if s.image.name in held_out else inner[s.image.name]) for s in samples]


def split_record(samples: List[Sample]) -> Dict[str, list | dict]:
    """{split: [image stems]}: what a report or a reader needs to reproduce the split; where the dataset names
    patients, also "patients": {image stem: patient} (a patient's images are always in one split)."""
    record: Dict[str, list | dict] = {"train": [], "val": [], "test": []}
    for sample in samples:
        record[sample.split].append(sample.image.stem)
    if any(s.patient for s in samples):
        record["patients"] = {s.image.stem: s.patient for s in samples if s.patient}
    return record
