"""`python -m retina_seg.export run_id=<id> format=savedmodel|tflite|onnx output=<folder>`.

Writes the run's network as a standalone file that runs without retina-seg (TensorFlow, TFLite or
ONNX Runtime alone) and `inference.json` beside it: input normalisation, channel order,
preprocessing, window, stride, flips, field of view, thresholds and class names.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from retina_seg.cli import run_app, user_errors
from retina_seg.config import ExportConfig, validate
from retina_seg.serve.export import export_network
from retina_seg.tracking.reload import load_logged_model
from retina_seg.tracking.runs import check_tracking

log = logging.getLogger(__name__)


@hydra.main(config_path="conf", config_name="export", version_base="1.3")
@user_errors
def main(cfg: DictConfig) -> None:
    config: ExportConfig = validate(cfg)
    if config.run_id:
        check_tracking(config.tracking)
    source = config.run_id or config.model
    logged = load_logged_model(source, config.tracking.uri, trust=config.trust_model)
    written = export_network(logged, config.format, Path(config.output), source, config.opset, config.precision)
    print(f"wrote {', '.join(map(str, written))} and {Path(config.output) / 'inference.json'}"
          + (f" (the {len(written)} folds of a cross-validation ensemble: average their probabilities, see "
             "inference.json's `combine`)" if len(written) > 1 else ""))


if __name__ == "__main__":
    run_app(main)
