"""The run's MLflow model: an `mlflow.pyfunc` model that carries the whole inference path.

It holds the run's own files (`<BACKBONE>_Retinal.json/.h5` weights without optimizer state,
`config.yaml`, `metrics/summary.json`) and rebuilds from them the same Segmenter that `predict`
uses, so `mlflow models serve -m runs:/<id>/model` answers with `predict`'s masks. The request
contract is in `contract.py`. Model config (overridable at load time, e.g. `SERVING_MODEL_CONFIG`):
`trust_model` (rebuild model JSON objects retina-seg never writes) and the request limits of `serve` in
the run's config.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path
from typing import Sequence

import mlflow
import numpy as np
import pandas as pd

from retina_seg.config import Config
from retina_seg.inference.drift import image_statistics
from retina_seg.serve.contract import (
    IMAGE,
    TRUST,
    RequestError,
    decode_row,
    encode_file,
    limits_of,
    response_row,
    signature,
)
from retina_seg.serve.exchange import BAD_PARAMETER, NOT_AN_IMAGE, current, refused
from retina_seg.tracking import artifacts
from retina_seg.tracking.reload import load_segmenter

RUN_FILES = (artifacts.CONFIG, artifacts.SUMMARY)
CARRIED_FILES = (artifacts.MODEL_CARD, artifacts.VALIDATION_STATISTICS)  # carried when the run wrote them


class RetinaSegModel(mlflow.pyfunc.PythonModel):
    """Rows of base64 image files -> rows of base64 PNG masks (see contract.py)."""

    def load_context(self, context) -> None:
        self.trust = bool((context.model_config or {}).get(TRUST, False))
        self.limits = limits_of(context.model_config)
        self.run_files = Path(context.artifacts["run"])  # the run's files inside the model (MODEL_CARD.md, ...)
        self.segmenter = load_segmenter(self.run_files, trust=self.trust)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        """Under retina-seg-serve the request's record (exchange.py) also gets why it was refused, or the
        model's time and each image's drift statistics at the model's own thresholds."""
        exchange, started = current(), time.perf_counter()
        try:
            rows = self.answer(model_input, params or {}, None if exchange is None else exchange.images)
        except RequestError as error:
            refused(error.refusal)
            raise
        if exchange is not None:
            exchange.model_seconds = time.perf_counter() - started
        return pd.DataFrame(rows)

    def answer(self, model_input: pd.DataFrame, params: dict, statistics: list | None) -> list[dict]:
        """The response rows; with a `statistics` list, each image's drift statistics are appended to it."""
        if IMAGE not in model_input.columns:
            raise RequestError(f"the request has no '{IMAGE}' column (it has {list(model_input.columns)})",
                               NOT_AN_IMAGE)
        images = [decode_row(text, row, self.limits) for row, text in enumerate(model_input[IMAGE])]
        threshold = params.get("threshold")
        if threshold is not None and not 0 <= threshold <= 1:
            raise RequestError(f"params.threshold={threshold} is invalid: expected a probability between 0 and 1",
                               BAD_PARAMETER)
        channels, rows = self.segmenter.channels, []
        for image in images:
            fov = self.segmenter.fov(image)
            prob, scale = self.segmenter.predict(image, fov)
            masks = self.segmenter.masks(prob, threshold)
            rows.append(response_row(prob, masks, fov, scale, channels, bool(params.get("return_probabilities", False)),
                                     image if params.get("return_image", False) else None))
            if statistics is not None:
                own = masks if threshold is None else self.segmenter.masks(prob)
                statistics.append(image_statistics(own, fov, channels))
        return rows


def requirements() -> list[str]:
    """What a serving environment needs besides retina-seg itself (which the serving image installs)."""
    return [f"{name}=={version(name)}" for name in ("tensorflow", "tf-keras", "segmentation-models", "h5py",
                                                     "opencv-python-headless", "pillow")]


def log_pipeline_model(run_files: Path, config: Config, example: np.ndarray, path: Path | None = None,
                       folds: Sequence[Path] = ()) -> None:
    """Log the whole inference path as the active run's model `model` (or save it at `path`, for a run whose
    tracking server was lost), with its signature and `example` (a uint8 RGB photograph, sent as a PNG file)
    as input example. `run_files` is the run's staging folder; a cross-validation parent passes its folds'
    staging folders as `folds` and serves their ensemble (`folds/fold<k>/` in the model, see reload.py)."""
    pair = (artifacts.architecture(config.backbone.name), artifacts.weights(config.backbone.name))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "run"
        copies = [(run_files / name, folder / name) for name in RUN_FILES]
        copies += [(run_files / name, folder / name) for name in CARRIED_FILES if (run_files / name).is_file()]
        if folds:
            copies += [(fold / name, artifacts.fold_folder(folder, k) / name)
                       for k, fold in enumerate(folds) for name in pair]
        else:
            copies += [(run_files / name, folder / name) for name in pair]
        for source, target in copies:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, target)
        model = dict(
            python_model=str(Path(__file__).with_name("model_code.py")), artifacts={"run": str(folder)},
            signature=signature(config.data.channels), input_example=pd.DataFrame({IMAGE: [encode_file(example)]}),
            model_config={TRUST: False, **asdict(config.serve)}, pip_requirements=requirements())
        if path is None:
            mlflow.pyfunc.log_model(name=artifacts.MODEL, **model)
        else:
            mlflow.pyfunc.save_model(str(path), **model)
