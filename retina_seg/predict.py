"""`python -m retina_seg.predict run_id=<id>|model=<folder> input=<file-or-folder> output=<folder>`.

For every readable image (its stem: the file name without its image suffix): `<stem>_prob.png`
(probability x 255), `<stem>_mask.png` (0/255, at the threshold chosen on validation when the model
was evaluated) and `<stem>_overlay.png` (the mask painted over the image); multi-label models write
one prob/mask file per channel (`<stem>_prob_MA.png`, ...). Unreadable files are reported and skipped;
the batch goes on.
The model's own training preprocessing and scale are applied, read from the run's `config.yaml`;
predictions outside the field of view are zero unless `inference.fov_mask=false`. The served MLflow
model runs the same Segmenter, so its masks are these masks.
"""

from __future__ import annotations

import logging
import sys
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import cv2
import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from tqdm import tqdm

from retina_seg.cli import run_app, user_errors
from retina_seg.config import ConfigError, PredictConfig, validate
from retina_seg.data.adapters import IMAGE_SUFFIXES, image_stem
from retina_seg.data.loading import DataError, read_image
from retina_seg.reporting.figures import overlay
from retina_seg.tracking.reload import load_segmenter
from retina_seg.tracking.runs import check_tracking

log = logging.getLogger(__name__)


def list_inputs(source: Path) -> list[Path]:
    """One image file, or every image file (by suffix) directly in a folder, sorted. Two files with the same
    stem (`a.png`, `a.jpg`) would write the same output files: refused."""
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise ConfigError(f"input='{source}' is neither an image file nor a folder")
    files = sorted(p for p in source.iterdir() if p.is_file() and p.name.lower().endswith(IMAGE_SUFFIXES))
    if not files:
        raise ConfigError(f"input='{source}' holds no image files (expected {', '.join(IMAGE_SUFFIXES)})")
    by_stem = defaultdict(list)
    for path in files:
        by_stem[image_stem(path)].append(path.name)
    clashes = [names for names in by_stem.values() if len(names) > 1]
    if clashes:
        raise ConfigError(f"input='{source}': {' and '.join(clashes[0])} would write the same output files "
                          f"({image_stem(source / clashes[0][0])}_mask.png, ...): rename or move one of them")
    return files


def _write(path: Path, pixels: np.ndarray) -> None:
    image = cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR) if pixels.ndim == 3 else pixels
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write {path}")


def predict_folder(config: PredictConfig, overrides: Sequence[str] = ()) -> tuple[list[Path], list[str]]:
    """Predict every input with the run's own inference settings under the command line's `inference.*`
    `overrides`; returns (images written, 'file: reason' for each skipped input)."""
    inputs = list_inputs(Path(config.input))
    if config.run_id:
        check_tracking(config.tracking)
    segmenter = load_segmenter(config.run_id or config.model, config.tracking.uri, trust=config.trust_model,
                               overrides=overrides, fallback=config)
    channels = segmenter.channels
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    done, skipped = [], []
    for path in tqdm(inputs, desc="predicting", unit="image", disable=None):
        try:
            image = read_image(path)
        except DataError as exc:
            skipped.append(str(exc))
            continue
        prob, scale = segmenter.predict(image)
        if scale != 1:
            log.info("%s: field of view %s the training images': seen at %.3fx its size", path.name,
                     "wider than" if scale < 1 else "narrower than", scale)
        masks = segmenter.masks(prob)
        stem = image_stem(path)
        for c, name in enumerate(channels):
            suffix = "" if len(channels) == 1 else f"_{name}"
            _write(output / f"{stem}_prob{suffix}.png", np.round(prob[..., c] * 255).astype(np.uint8))
            _write(output / f"{stem}_mask{suffix}.png", masks[..., c].astype(np.uint8) * 255)
        _write(output / f"{stem}_overlay.png", overlay(image, masks))
        done.append(path)
    return done, skipped


@hydra.main(config_path="conf", config_name="predict", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> int:
    done, skipped = predict_folder(validate(cfg), HydraConfig.get().overrides.task)
    for reason in skipped:
        print(f"skipped: {reason}", file=sys.stderr)
    log.info("wrote predictions for %d image(s) to %s; skipped %d", len(done), cfg.output, len(skipped))
    if not done:
        raise DataError(f"input='{cfg.input}': no image could be read")  # bad input files, like other data errors
    return len(done)


if __name__ == "__main__":
    run_app(main)
