"""`MODEL_CARD.md`: what a trained model is for and not for, written beside the run's report and carried inside
its MLflow model (the server answers it at `GET /model-card`), so that whoever deploys the model reads it.

Assembled from what the run staged (its split, the test metrics per image, the second human observer) and what
the runner knows (the scale and precision it trained at), with the dataset's facts (reporting/datasets.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from retina_seg.config import Config, Sampling, Task
from retina_seg.data.adapters import IDRID_LESIONS
from retina_seg.data.loading import SPLITS
from retina_seg.reporting.datasets import facts
from retina_seg.reporting.report import metrics_table, split_table
from retina_seg.tracking import artifacts

LESION_NAMES = {code: folder.split(". ", 1)[1].lower() for code, folder in IDRID_LESIONS.items()}


def segments(config: Config) -> str:
    if config.data.task is Task.vessels:
        return "retinal blood vessels (one mask: vessel or not)"
    names = [f"{LESION_NAMES.get(c, c)} ({c})" for c in config.data.channels]
    return f"diabetic retinopathy lesions, one mask per type: {', '.join(names)}"


def split_text(staging: Path) -> str:
    """The images of each split, or of each fold of a cross-validation parent."""
    if (staging / artifacts.SPLIT).is_file():
        rows = split_table(json.loads((staging / artifacts.SPLIT).read_text())).drop(columns="stems")
        return rows.assign(**{"used for": rows["split"].map(USE)}).to_markdown(index=False)
    record = json.loads((staging / artifacts.CV_SPLIT).read_text())
    rows = pd.DataFrame([{"fold": k, **{name: len(split[name]) for name in SPLITS}}
                         for k, split in enumerate(record["splits"])])
    return (f"{record['folds']}-fold cross-validation (seed {record['seed']}): the model is the folds' ensemble, "
            f"each fold trained on its own split (images per split):\n\n{rows.to_markdown(index=False)}")


USE = {"train": "fitting the weights", "val": "choosing the epoch and the threshold(s)",
       "test": "the figures below, never seen in training"}


def write_model_card(staging: Path, config: Config, title: str, fov_width: float, precision: str,
                     inference_precision: str) -> None:
    """`MODEL_CARD.md` in `staging`, after the run's evaluation wrote its metrics there. `fov_width`: the median
    width in pixels of the training photographs' field of view; `precision`: what training computed at."""
    data = facts(config.data.name)
    per_image = pd.read_csv(staging / artifacts.PER_IMAGE, dtype={"image": str})
    tested = per_image["image"].nunique()
    observer = (staging / artifacts.SECOND_OBSERVER).is_file()
    scale = (f"at most {config.data.max_side} px a side" if config.data.max_side else "their native size")
    sampling = (f"{config.image_size} px windows cut from photographs at {scale}" if config.data.sampling is
                Sampling.patches else f"whole photographs resized to {config.image_size}x{config.image_size} px")
    citation = f"- {data.title}: {data.citation}" if data.citation else f"- {data.title}: no publication to cite."
    lines = [
        f"# Model card: {title}", "",
        "**A research tool, not a diagnosis.** Its masks are not a medical device's output and have not been "
        "cleared by any regulator; they must not decide a patient's diagnosis, grading or treatment. A qualified "
        "grader reads the photograph.", "",
        "## What it does", "",
        f"- Segments {segments(config)} in colour fundus photographs like those it was trained on "
        f"({data.title}; camera: {data.camera}).",
        "- Input: a photograph file (PNG, JPEG or TIFF). Output: per class a mask at the photograph's own size, "
        "zero outside the field of view, and on request the probabilities.",
        f"- Network: {config.arch.name.value} with a {config.backbone.name} encoder, trained on {sampling}.", "",
        "## Training data", "",
        "| dataset | photographs | camera | licence |", "| --- | --- | --- | --- |",
        f"| {data.title} | {data.photographs} | {data.camera} | {data.licence} |", "",
        split_text(staging), "",
        "## Test figures", "",
        f"Inside the field of view, per image at native resolution; mean ± sd over {tested} test image(s)"
        + (", with the dataset's second human observer scored against the same truth as the reference a model "
           "is compared with." if observer else "; the dataset has no second human observer."), "",
        metrics_table(staging).to_markdown(index=False), "",
        "## Scale, cameras and precision", "",
        f"- Scale: the training photographs' field of view is {fov_width:.0f} px wide (median); a photograph "
        "whose field of view is much wider or narrower shows vessels and lesions at a size the model has not seen "
        "(rescale it so its field of view is about as wide).",
        f"- Cameras: {data.camera}; no other camera was seen in training.",
        f"- Precision: trained at {precision}, served at {inference_precision} (`inference.precision`).", "",
        "## Known limits", "",
        f"- Trained and tested on {data.title} alone: on other cameras, fields of view, image quality or "
        "populations its figures are unknown until measured there (`python -m retina_seg.evaluate targets=...`).",
        f"- {tested} test image(s): the figures above carry the uncertainty of so few images.",
        "- The field of view is derived from the photograph (its red channel); a very dark or unusual border "
        "can cut it wrongly, and nothing outside it is segmented.",
        "- A mask says nothing about photographs that are not colour fundus photographs: the server answers any "
        "image file it can decode.",
        *(["- Trained on synthetic images: a demonstration of the pipeline, useless on real photographs."]
          if config.data.name == "synthetic" else []),
        *(["- Lesions a few pixels wide (microaneurysms) are the hardest: read the per-class figures, not their "
           "mean."] if config.data.task is Task.lesions else []), "",
        "## How to cite the datasets", "", citation, "",
    ]
    (staging / artifacts.MODEL_CARD).write_text("\n".join(lines))
