"""Rebuild a trained model from its two artifacts: `<BACKBONE>_Retinal.json` (architecture) + `.h5` (weights)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import segmentation_models  # noqa: F401  (registers custom layers such as FixedDropout for model_from_json)
import tensorflow as tf
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from retina_seg.config import CONF_DIR

SUFFIX = "_Retinal"


def default_tracking_uri() -> str:
    """The URI of the default `tracking=local` config, so reloading finds what `run` logged."""
    return OmegaConf.load(CONF_DIR / "tracking" / "local.yaml").uri


def load_model(source: str | Path, tracking_uri: str | None = None) -> tf.keras.Model:
    """`source` is a folder holding the pair, or an MLflow run id whose artifact root holds it."""
    folder = Path(source)
    if not folder.is_dir():
        folder = _download_pair(str(source), tracking_uri or default_tracking_uri())
    architecture, weights = _find_pair(folder)
    model = tf.keras.models.model_from_json(architecture.read_text())
    model.load_weights(str(weights))
    return model


def _find_pair(folder: Path) -> tuple[Path, Path]:
    found = sorted(folder.glob(f"*{SUFFIX}.json"))
    if len(found) != 1:
        raise FileNotFoundError(f"{folder}: expected exactly one *{SUFFIX}.json, found {[p.name for p in found]}")
    weights = found[0].with_suffix(".h5")
    if not weights.is_file():
        raise FileNotFoundError(f"{folder}: {found[0].name} has no matching {weights.name}")
    return found[0], weights


def _download_pair(run_id: str, tracking_uri: str) -> Path:
    client = MlflowClient(tracking_uri)
    names = [a.path for a in client.list_artifacts(run_id) if a.path.endswith((f"{SUFFIX}.json", f"{SUFFIX}.h5"))]
    folder = Path(tempfile.mkdtemp(prefix=f"retina-seg-{run_id[:8]}-"))
    for name in names:
        client.download_artifacts(run_id, name, str(folder))
    return folder
