"""Rebuild a trained model from its two artifacts: `<BACKBONE>_Retinal.json` (architecture) + `.h5` (weights).

A model's JSON can carry code (it names modules to import and classes to build; `Lambda` layers hold
marshalled Python bytecode), so a JSON is rebuilt only when everything in it is what retina-seg's own
architectures produce (model/known_layers.py), unless the caller trusts it (`trust_model=true`); the run's
`config.yaml` is read as data (config.read_run_config) and validated before any model is built.
"""

from __future__ import annotations

import json
import logging
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import segmentation_models  # noqa: F401  (registers custom layers such as FixedDropout for model_from_json)
import tensorflow as tf
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf
from tf_keras.src.saving.serialization_lib import SafeModeScope

from retina_seg.config import (
    CONF_DIR,
    Config,
    ConfigError,
    InferenceConfig,
    Rescale,
    Sampling,
    describe_inference,
    inference_in_force,
    read_run_config,
    validate,
)
from retina_seg.errors import UserError
from retina_seg.inference.ensemble import EnsemblePredictor
from retina_seg.inference.predictor import Predictor
from retina_seg.inference.segmenter import Segmenter
from retina_seg.model.known_layers import objects, unknown_objects
from retina_seg.tracking import artifacts

METRICS = str(Path(artifacts.SUMMARY).parent)  # the folder of metric files, downloaded with the model

log = logging.getLogger(__name__)


class ModelSourceError(UserError):
    """A run id or folder that does not hold a loadable model; the message says what is missing."""


def default_tracking_uri() -> str:
    """The URI of the default `tracking=local` config, so reloading finds what `run` logged."""
    return OmegaConf.load(CONF_DIR / "tracking" / "local.yaml").uri


def load_model(source: str | Path, tracking_uri: str | None = None, trust: bool = False) -> tf.keras.Model:
    """`source` is a folder holding the pair, or an MLflow run id whose artifact root holds it."""
    if Path(source).is_dir():
        return _build(*_find_pair(Path(source)), trust=trust)
    uri = tracking_uri or default_tracking_uri()
    client = MlflowClient(uri)
    with _downloaded(client, find_run(client, str(source), uri), (".json", ".h5")) as folder:
        return _build(*_find_pair(folder), trust=trust)


@dataclass
class LoggedModel:
    models: list  # tf.keras.Model: one, or one per fold of a cross-validation parent run (an ensemble)
    config: Config  # the training run's resolved config: preprocessing, image_size, sampling...
    thresholds: dict  # per channel, chosen on validation when the model was evaluated (0.5 if unknown)
    fov_width: float | None  # the training images' median FOV width (None for runs logged before it was kept)
    experiment_id: str | None

    @property
    def model(self) -> tf.keras.Model:
        return self.models[0]

    def predictor(self, settings: InferenceConfig) -> Predictor | EnsemblePredictor:
        """The full-resolution predictor; a cross-validation run's folds average their probabilities."""
        members = [Predictor(m, self.config.image_size, self.config.data.sampling, settings,
                             max_side=self.config.data.max_side)
                   for m in self.models]
        return members[0] if len(members) == 1 else EnsemblePredictor(members)


def load_logged_model(source: str, tracking_uri: str | None, trust: bool = False,
                      fallback: Config | None = None) -> LoggedModel:
    """The model and the config it was trained with, from a run id or a folder (a run's artifacts).
    A bare folder without the run's config.yaml uses `fallback` (the command line's config). The id of
    a cross-validation parent run gives the ensemble of its folds' models, and so does a folder whose
    `folds/fold<k>/` hold one model each (a parent's served model)."""
    folder = Path(source)
    if folder.is_dir():
        members = sorted((folder / artifacts.FOLDS).iterdir(), key=lambda f: int(f.name.removeprefix("fold"))) if (
            folder / artifacts.FOLDS).is_dir() else [folder]
        known = _config_and_thresholds(folder, fallback)  # checked before any model is built
        return LoggedModel([_build(*_find_pair(member), trust=trust) for member in members], *known, None)
    tracking_uri = tracking_uri or default_tracking_uri()
    client = MlflowClient(tracking_uri)
    run = find_run(client, source, tracking_uri)
    if "cv_folds" in run.data.tags:
        return _load_folds(client, run, trust)
    with _downloaded(client, run, (".json", ".h5", artifacts.CONFIG, METRICS)) as folder:
        known = _config_and_thresholds(folder, fallback)
        return LoggedModel([_build(*_find_pair(folder), trust=trust)], *known, run.info.experiment_id)


def _load_folds(client: MlflowClient, parent, trust: bool) -> LoggedModel:
    """A cross-validation parent: its config and ensemble threshold, and the model of every fold run."""
    parent_id = parent.info.run_id
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    folds = sorted((r for r in children if "cv_fold" in r.data.tags and r.info.status == "FINISHED"),
                   key=lambda r: int(r.data.tags["cv_fold"]))
    expected = int(parent.data.tags["cv_folds"])
    if len(folds) != expected:
        raise ModelSourceError(f"cross-validation run {parent_id} has {len(folds)} finished fold runs, "
                               f"expected {expected}")
    with _downloaded(client, parent, (artifacts.CONFIG, METRICS), require_model=False) as folder:
        known = _config_and_thresholds(folder, None)
    models = []
    for fold in folds:
        with _downloaded(client, fold, (".json", ".h5")) as folder:
            models.append(_build(*_find_pair(folder), trust=trust))
    return LoggedModel(models, *known, parent.info.experiment_id)


def _config_and_thresholds(folder: Path, fallback: Config | None) -> tuple[Config, dict, float | None]:
    """The run's config, its validation thresholds and its training FOV width, from its files."""
    if (folder / artifacts.CONFIG).is_file():
        try:
            config = validate(OmegaConf.merge(OmegaConf.structured(Config), read_run_config(folder / artifacts.CONFIG)))
        except ConfigError as exc:
            raise ModelSourceError(f"{folder / artifacts.CONFIG}: {exc}") from None
    elif fallback is not None:
        log.warning("%s has no config.yaml: assuming image_size=%d, sampling=%s and the command line's "
                    "preprocessing", folder, fallback.image_size, fallback.data.sampling.value)
        config = fallback
    else:
        raise ModelSourceError(f"{folder}: no config.yaml beside the model (needed for its preprocessing)")
    summary = folder / artifacts.SUMMARY
    known = json.loads(summary.read_text()) if summary.is_file() else {}
    channels = config.data.channels
    thresholds = {c: known.get("threshold" if len(channels) == 1 else f"threshold_{c}", 0.5) for c in channels}
    return config, thresholds, known.get(artifacts.FOV_WIDTH)


def load_segmenter(source: str | Path, tracking_uri: str | None = None, trust: bool = False,
                   overrides: Sequence[str] = (), fallback: Config | None = None) -> Segmenter:
    """The whole inference path of a run (its id, a cross-validation parent's id for the ensemble of its folds,
    or a folder of its files: `<BACKBONE>_Retinal.json/.h5`, `config.yaml`, `metrics/summary.json`): the one
    place `predict` and the served model build it, with the run's own inference settings (what its recipe
    measured) under any `inference.<key>=<value>` of `overrides` (a command line); the settings in force are
    logged."""
    logged = load_logged_model(str(source), tracking_uri, trust=trust, fallback=fallback)
    trained = logged.config
    settings, given = inference_in_force(trained.inference, overrides)
    log.info(describe_inference(settings, given))
    if settings.rescale is Rescale.fov and logged.fov_width is None and trained.data.sampling is Sampling.patches:
        log.warning("%s records no training FOV width (logged before it was kept): photographs are predicted at "
                    "their own scale", source)
    return segmenter_of(logged, settings)


def segmenter_of(logged: LoggedModel, settings: InferenceConfig) -> Segmenter:
    """The Segmenter of a model and its training config under inference `settings` (the FOV rule applies to
    models trained on patches of photographs at their own scale)."""
    trained = logged.config
    rescaling = settings.rescale is Rescale.fov and trained.data.sampling is Sampling.patches
    return Segmenter(logged.predictor(settings), trained.preprocess, trained.data.channels, logged.thresholds,
                     settings.fov_mask, logged.fov_width if rescaling else None)


def refuse_unknown(architecture: dict, path: Path) -> None:
    """Raise unless every object in the model JSON `architecture` is one retina-seg's own models contain (see
    model/known_layers.py): anything else can import modules or run code when it is deserialised."""
    found = unknown_objects(architecture)
    if found:
        raise ModelSourceError(f"{path}: contains {found}, which no retina-seg architecture produces (a model JSON "
                               "can run code when loaded); load it only if you trust its origin (trust_model=true)")


def _build(architecture: Path, weights: Path, trust: bool) -> tf.keras.Model:
    text = architecture.read_text()
    parsed = json.loads(text)
    if not trust:
        refuse_unknown(parsed, architecture)
    # tf-keras' own guard refuses every Lambda: it stays on unless the model is trusted or its Lambda layers passed
    # the allow-list (SafeModeScope has no public alias in 2.21)
    lambdas = any(node["class_name"] == "Lambda" for node in objects(parsed))
    with SafeModeScope(not trust and not lambdas):
        model = tf.keras.models.model_from_json(text)
    try:
        model.load_weights(str(weights))
    except (ValueError, OSError) as exc:
        reason = str(exc).splitlines()[0][:200]
        raise ModelSourceError(f"{weights.name} does not match {architecture.name}: {reason}") from exc
    return model


def _find_pair(folder: Path) -> tuple[Path, Path]:
    found = sorted(folder.glob(f"*{artifacts.SUFFIX}.json"))
    if len(found) != 1:
        raise ModelSourceError(f"{folder}: expected exactly one *{artifacts.SUFFIX}.json, found "
                               f"{[p.name for p in found]}")
    weights = found[0].with_suffix(".h5")
    if not weights.is_file():
        raise ModelSourceError(f"{folder}: {found[0].name} has no matching {weights.name}")
    return found[0], weights


def find_run(client: MlflowClient, run_id: str, tracking_uri: str):
    """The MLflow run `run_id`, or a ModelSourceError saying where it was looked for."""
    try:
        return client.get_run(run_id)
    except MlflowException as exc:
        raise ModelSourceError(f"run {run_id!r} not found in {tracking_uri} (and no such folder)") from exc


@contextmanager
def _downloaded(client: MlflowClient, run, endings: tuple, require_model: bool = True) -> Iterator[Path]:
    """A temporary folder with the run's root artifacts whose names end with `endings`, removed when the
    block ends: what is built from it is read into memory inside the block (weights can be 100 MB a run)."""
    run_id = run.info.run_id
    names = [a.path for a in client.list_artifacts(run_id) if a.path.endswith(endings)]
    if require_model and not any(name.endswith(f"{artifacts.SUFFIX}.json") for name in names):
        raise ModelSourceError(f"run {run_id} has no *{artifacts.SUFFIX}.json / .h5 model artifacts")
    with tempfile.TemporaryDirectory(prefix=f"retina-seg-{run_id[:8]}-") as folder:
        for name in names:
            client.download_artifacts(run_id, name, folder)
        try:
            yield Path(folder)
        except ModelSourceError as exc:  # name the run, not a folder that is about to disappear
            raise ModelSourceError(str(exc).replace(folder, f"run {run_id}")) from None
