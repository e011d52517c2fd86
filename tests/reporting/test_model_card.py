"""The model card's data section, from the split a run logged."""

from __future__ import annotations

import json

from retina_seg.reporting.model_card import split_text
from retina_seg.tracking import artifacts


def test_the_split_of_a_dataset_with_patients_counts_them_per_split(tmp_path):
    """CHASE_DB1's split.json names each image's child beside the splits: a count per split, not a split."""
    split = {"train": ["Image_01L", "Image_01R", "Image_02L"], "val": ["Image_03L", "Image_03R"], "test": [],
             "patients": {"Image_01L": "01", "Image_01R": "01", "Image_02L": "02", "Image_03L": "03",
                          "Image_03R": "03"}}
    (tmp_path / artifacts.SPLIT).write_text(json.dumps(split))
    lines = split_text(tmp_path).splitlines()
    assert [cell.strip() for cell in lines[0].strip("|").split("|")] == ["split", "images", "patients", "used for"]
    rows = {line.strip("|").split("|")[0].strip(): [c.strip() for c in line.strip("|").split("|")[1:3]]
            for line in lines[2:]}
    assert rows == {"train": ["3", "2"], "val": ["2", "1"], "test": ["0", "0"]}
