"""The structured config schema: every key, its type and its allowed range.

Hydra merges the YAML tree in `conf/` onto these dataclasses, so a misspelt key or a wrong type
fails at composition time; `validate` then checks ranges and cross-key rules before any work starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Sequence
from urllib.parse import urlsplit

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from retina_seg.errors import UserError

_SOURCE = Path(__file__).resolve().parents[1]
# A source checkout keeps its MLflow store, data cache and git commit in the project folder; an installed
# package (no pyproject.toml beside it) uses the working directory and never writes into site-packages.
PROJECT_ROOT = _SOURCE if (_SOURCE / "pyproject.toml").is_file() else Path.cwd()
CONF_DIR = Path(__file__).resolve().parent / "conf"  # ships in the wheel; in a checkout a link to the top-level conf/


class ConfigError(UserError):
    """A config value that cannot work; the message names the key and what was expected."""


class Task(Enum):
    vessels = "vessels"
    lesions = "lesions"


class Arch(Enum):
    unet = "unet"
    fpn = "fpn"
    linknet = "linknet"
    pspnet = "pspnet"


class Optimizer(Enum):
    adam = "adam"
    adamw = "adamw"
    sgd = "sgd"
    rmsprop = "rmsprop"


# numeric precision: float32, or Keras' mixed policies; auto decides per machine (model/precision.py)
PRECISIONS = ("auto", "32", "bf16-mixed", "16-mixed")
# Keras' training logs and training/validation.py's validation scores: what trainer.monitor can follow
MONITORABLE = ["loss", "iou_score", "f1-score", "val_loss", "val_iou_score", "val_f1-score", "val_auroc", "val_maupr"]
TASK_MONITOR = {"vessels": "val_f1-score", "lesions": "val_maupr"}  # trainer.monitor=null: what the task is scored by


class Sampling(Enum):
    resize = "resize"  # whole images resized to image_size
    patches = "patches"  # random image_size crops of native-resolution images


class Normalization(Enum):
    unit = "unit"  # RGB / 255
    backbone = "backbone"  # the encoder's own ImageNet preprocessing, built into the model


class Strategy(Enum):
    default = "default"  # one device
    mirrored = "mirrored"  # tf.distribute.MirroredStrategy: data-parallel over trainer.devices


class InferenceMode(Enum):
    tiles = "tiles"  # overlapping image_size windows, blended
    whole = "whole"  # the padded image in one pass when it fits inference.memory_budget_mb, else large tiles


class Mode(Enum):
    min = "min"
    max = "max"


class Rescale(Enum):
    fov = "fov"  # scale each photograph so its FOV is as wide as the training images' (median), then back
    none = "none"  # predict at the photograph's own resolution (capped at data.max_side)


def _require(ok: bool, key: str, expected: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{key}={value!r} is invalid: expected {expected}")


@dataclass
class BackboneConfig:
    name: str = MISSING


@dataclass
class ArchConfig:
    name: Arch = MISSING
    size_multiple: int = 32  # input height/width must divide by this (PSPNet: 6 * downsample_factor)
    options: Dict[str, Any] = field(default_factory=dict)  # extra keyword arguments for the sm constructor

    def __post_init__(self) -> None:
        _require(self.size_multiple > 0, "arch.size_multiple", "a positive integer", self.size_multiple)


@dataclass
class LossConfig:
    dice: float = 0.0
    focal: float = 0.0
    bce: float = 0.0
    jaccard: float = 0.0
    # per output channel (empty: all 1): how much each channel counts in every term, and how much a
    # foreground pixel counts against a background one in BCE (rare lesions need their pixels to count)
    class_weights: List[float] = field(default_factory=list)
    positive_weights: List[float] = field(default_factory=list)

    def weights(self) -> Dict[str, float]:
        return {"dice": self.dice, "focal": self.focal, "bce": self.bce, "jaccard": self.jaccard}

    def __post_init__(self) -> None:
        for term, weight in self.weights().items():
            _require(math.isfinite(weight) and weight >= 0, f"loss.{term}", "a finite weight >= 0", weight)
        _require(any(w > 0 for w in self.weights().values()), "loss", "at least one weight > 0", self.weights())
        for key in ("class_weights", "positive_weights"):
            values = getattr(self, key)
            _require(all(math.isfinite(v) and v > 0 for v in values), f"loss.{key}", "finite weights > 0", values)
        _require(not (self.focal and self.class_weights), "loss.class_weights",
                 "no class weights with loss.focal > 0 (they weight dice, jaccard and bce)", self.class_weights)


@dataclass
class DataConfig:
    name: str = MISSING
    task: Task = Task.vessels
    root: str = MISSING
    # lesion datasets set their own in conf/data (idrid: MA, HE, EX, SE; synthetic: the MA, HE, EX it draws)
    lesion_types: List[str] = field(default_factory=lambda: ["MA", "HE", "EX"])
    num_images: int = 48  # synthetic only: how many images to generate
    native_size: int = 256  # synthetic only: side of the generated images in pixels
    val_fraction: float = 0.15  # of all images, or of the official training split where there is one
    test_fraction: float = 0.2  # used only by datasets without an official test split
    official_train_count: int = 0  # datasets split by file order (CHASE_DB1): the first N images train
    sampling: Sampling = Sampling.resize
    foreground_share: float = 0.5  # patches only: share of patches centred on a foreground pixel
    # patches only, per channel name: share of patches centred on a pixel of that channel (drawn from an
    # image that has it), so rare lesions are seen; non-empty replaces foreground_share
    class_shares: Dict[str, float] = field(default_factory=dict)
    max_side: int | None = None  # patches only: downscale larger native images to this longest side

    def __post_init__(self) -> None:
        _require(self.num_images >= 3, "data.num_images", "at least 3 (train, val and test)", self.num_images)
        _require(self.native_size >= 32, "data.native_size", "at least 32 pixels", self.native_size)
        for key in ("val_fraction", "test_fraction"):
            value = getattr(self, key)
            _require(0 < value < 1, f"data.{key}", "a fraction between 0 and 1", value)
        _require(self.official_train_count >= 0, "data.official_train_count", "an integer >= 0",
                 self.official_train_count)
        total = self.val_fraction + self.test_fraction
        _require(total < 1, "data.val_fraction + data.test_fraction", "a sum below 1", total)
        _require(len(self.lesion_types) > 0, "data.lesion_types", "at least one lesion type", self.lesion_types)
        _require(0 <= self.foreground_share <= 1, "data.foreground_share", "a fraction between 0 and 1",
                 self.foreground_share)
        _require(self.max_side is None or self.max_side >= 32, "data.max_side", "null or at least 32",
                 self.max_side)
        unknown = sorted(set(self.class_shares) - set(self.channels))
        _require(not unknown, "data.class_shares", f"keys among the channels {self.channels}", unknown)
        shares = list(self.class_shares.values())
        _require(all(v >= 0 for v in shares) and sum(shares) <= 1, "data.class_shares",
                 "shares >= 0 summing to at most 1", self.class_shares)

    @property
    def channels(self) -> List[str]:
        """Names of the model's output channels: one sigmoid channel per lesion type, or one for vessels."""
        return list(self.lesion_types) if self.task is Task.lesions else ["vessels"]


@dataclass
class PreprocessConfig:
    green_channel: bool = False  # feed the green channel (best vessel contrast) repeated to RGB
    clahe: bool = False  # contrast-limited adaptive histogram equalisation on the luminance
    clahe_clip_limit: float = 2.0
    normalization: Normalization = Normalization.unit
    fov_threshold: int = 20  # red-channel level (0-255) separating retina from background, to derive a FOV

    def __post_init__(self) -> None:
        _require(self.clahe_clip_limit > 0, "preprocess.clahe_clip_limit", "a value > 0", self.clahe_clip_limit)
        _require(0 < self.fov_threshold < 255, "preprocess.fov_threshold", "a level between 1 and 254",
                 self.fov_threshold)


@dataclass
class AugmentationConfig:
    name: str = "none"
    transforms: List[Any] = field(default_factory=list)  # albumentations transforms as `_target_` nodes

    def __post_init__(self) -> None:
        # Hydra instantiates every `_target_`, nested ones too: a config read back from a run (resume=, reload)
        # must not name anything but the transforms the project's own YAML can (a stranger's edited config.yaml
        # could name pathlib.Path.write_text)
        for key, node in _nodes(self.transforms, "augmentation.transforms"):
            if isinstance(node, dict) and "_target_" in node:
                _require(_is_transform(node["_target_"]), f"{key}._target_",
                         "an albumentations transform such as albumentations.HorizontalFlip (nothing else is "
                         "instantiated)", node["_target_"])


def _nodes(node: Any, key: str) -> Iterator[tuple[str, Any]]:
    """(key, node) for `node` and everything nested in it (dicts and lists), keys spelt as on the command line."""
    yield key, node
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for name, value in items:
        yield from _nodes(value, f"{key}[{name}]" if isinstance(node, list) else f"{key}.{name}")


def _is_transform(target: Any) -> bool:
    """Whether `target` is `albumentations.<Name>` for a transform or a composition of them. Lambda is not: it
    exists to run a callable of the config's choosing."""
    import albumentations as A  # only configs with transforms pay for the import

    name = target.removeprefix("albumentations.") if isinstance(target, str) else ""
    found = getattr(A, name, None) if name.isidentifier() and target == f"albumentations.{name}" else None
    return (isinstance(found, type) and issubclass(found, (A.BasicTransform, A.BaseCompose))
            and not issubclass(found, A.Lambda))


@dataclass
class TrainerConfig:
    epochs: int = 20
    batch_size: int = 4
    lr: float = 1e-3
    optimizer: Optimizer = Optimizer.adam
    # the log key that chooses the best epoch and drives early stopping and the LR schedule; null: the task's
    # own score (vessels: val_f1-score; lesions: val_maupr, the mean validation AUPR the IDRiD challenge ranks by)
    monitor: str | None = None
    monitor_mode: Mode = Mode.max
    early_stopping_patience: int = 8
    reduce_lr_patience: int = 4
    reduce_lr_factor: float = 0.5
    steps_per_epoch: int | None = None  # null: one pass over the training images
    time_limit_minutes: float | None = None  # stop training (keeping the best epoch) after this long
    divergence_patience: int | None = 5  # fail when val ROC AUC is at chance (<= 0.55) this many epochs in a row
    # patches: the validation set that steers training, drawn once: this many seeded windows centred like training
    # patches; null: whole validation images (at the data's scale; slower on large photographs)
    validation_windows: int | None = 128
    # the end-of-run evaluation: at most this many validation (threshold) and test images each, the first in file
    # order; null: all. A smoke run's figures (debug=fast) then take seconds instead of minutes on large photographs
    evaluation_images: int | None = None
    strategy: Strategy = Strategy.default
    devices: List[str] = field(default_factory=list)  # mirrored: e.g. ["/gpu:0", "/gpu:1"]; empty: all GPUs
    # Keras' run_eagerly: no graph is traced for the train and validation steps. Slower per step, but tracing
    # a U-Net costs seconds, more than a smoke run of a couple of steps takes (and it is easier to debug)
    run_eagerly: bool = False
    precision: str = "auto"  # 32, bf16-mixed, 16-mixed, or auto: bf16 where the CPU has bfloat16 units, 16 on GPUs

    def __post_init__(self) -> None:
        _require(self.precision in PRECISIONS, "trainer.precision", f"one of {', '.join(PRECISIONS)}", self.precision)
        _require(self.epochs >= 1, "trainer.epochs", "an integer >= 1", self.epochs)
        _require(self.batch_size >= 1, "trainer.batch_size", "an integer >= 1", self.batch_size)
        _require(math.isfinite(self.lr) and self.lr > 0, "trainer.lr", "a learning rate > 0", self.lr)
        _require(self.early_stopping_patience >= 0, "trainer.early_stopping_patience", "an integer >= 0",
                 self.early_stopping_patience)
        _require(self.reduce_lr_patience >= 0, "trainer.reduce_lr_patience", "an integer >= 0",
                 self.reduce_lr_patience)
        _require(0 < self.reduce_lr_factor < 1, "trainer.reduce_lr_factor", "a factor between 0 and 1",
                 self.reduce_lr_factor)
        _require(self.monitor is None or self.monitor in MONITORABLE, "trainer.monitor",
                 f"null (the task's score) or one of {MONITORABLE}", self.monitor)
        _require(self.validation_windows is None or self.validation_windows >= 1, "trainer.validation_windows",
                 "null (whole images) or an integer >= 1", self.validation_windows)
        _require(self.evaluation_images is None or self.evaluation_images >= 1, "trainer.evaluation_images",
                 "null (every image) or an integer >= 1", self.evaluation_images)
        _require(self.steps_per_epoch is None or self.steps_per_epoch >= 1, "trainer.steps_per_epoch",
                 "null or an integer >= 1", self.steps_per_epoch)
        _require(self.time_limit_minutes is None or self.time_limit_minutes > 0, "trainer.time_limit_minutes",
                 "null or a duration > 0", self.time_limit_minutes)
        _require(self.divergence_patience is None or self.divergence_patience >= 1, "trainer.divergence_patience",
                 "null or an integer >= 1", self.divergence_patience)


@dataclass
class InferenceConfig:
    stride: int | None = None  # sliding-window step in pixels; null: half the window (image_size)
    flip_tta: bool = False  # average the predictions of the four horizontal/vertical flips
    batch_size: int = 4  # windows per forward pass: bounds memory on large images
    mode: InferenceMode = InferenceMode.whole  # measured: equal F1/AUC to tiles, a third of the time (README)
    memory_budget_mb: int = 4096  # whole: the largest activation memory one forward pass may take
    jit_compile: bool = False  # XLA-compile the forward pass
    fov_mask: bool = True  # zero predictions outside the field of view derived from the image's red channel
    precision: str = "auto"  # as trainer.precision, for evaluate, predict and the served model
    # fov: a photograph whose field of view is more than 10% wider or narrower than the training images' is
    # predicted at the training scale and its probabilities scaled back (another camera's photographs)
    rescale: Rescale = Rescale.fov

    def __post_init__(self) -> None:
        _require(self.precision in PRECISIONS, "inference.precision", f"one of {', '.join(PRECISIONS)}",
                 self.precision)
        _require(self.memory_budget_mb >= 64, "inference.memory_budget_mb", "at least 64 (MB)",
                 self.memory_budget_mb)
        _require(self.stride is None or self.stride >= 1, "inference.stride", "null or an integer >= 1",
                 self.stride)
        _require(self.batch_size >= 1, "inference.batch_size", "an integer >= 1", self.batch_size)


@dataclass
class CvConfig:
    folds: int = 0  # 0: one train/val/test split; k >= 2: k-fold cross-validation, one nested run per fold

    def __post_init__(self) -> None:
        _require(self.folds == 0 or self.folds >= 2, "cv.folds", "0 (off) or an integer >= 2", self.folds)


@dataclass
class ServeConfig:
    """Limits of the served model (the logged pyfunc): requests outside them get HTTP 400 before any decoding."""

    min_side: int = 32  # smaller images are refused: no fundus photograph is this small
    max_side: int = 8192  # larger ones too, read from the file header (a small PNG can decode to gigabytes)
    max_image_mb: float = 20.0  # largest encoded image file accepted per row
    max_body_mb: float = 32.0  # largest request body `retina-seg-serve` reads (one 20 MB file is 27 MB of base64)

    def __post_init__(self) -> None:
        _require(self.min_side >= 1, "serve.min_side", "an integer >= 1", self.min_side)
        _require(self.max_side >= self.min_side, "serve.max_side", f"an integer >= serve.min_side ({self.min_side})",
                 self.max_side)
        _require(math.isfinite(self.max_image_mb) and self.max_image_mb > 0, "serve.max_image_mb", "a size > 0",
                 self.max_image_mb)
        _require(math.isfinite(self.max_body_mb) and self.max_body_mb > 0, "serve.max_body_mb", "a size > 0",
                 self.max_body_mb)


@dataclass
class TrackingConfig:
    uri: str = MISSING
    experiment: str = "retina-seg"
    artifact_location: str | None = None  # where a new experiment stores artifacts; null: the server decides
    run_name: str | None = None
    # how long a tracking server may stay unreachable before a run gives up on it and keeps its files locally
    outage_limit_seconds: float = 120.0
    heartbeat_seconds: float = 60.0  # how often a running job refreshes its run's `heartbeat` tag
    # MLflow's own system metrics (system/cpu_utilization_percentage, memory, disk, network; GPU with nvidia-ml-py)
    # every 10 s (MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL) while the run is open
    system_metrics: bool = True

    def __post_init__(self) -> None:
        _require(0 < self.outage_limit_seconds <= 900, "tracking.outage_limit_seconds", "a number in (0, 900]",
                 self.outage_limit_seconds)
        _require(self.heartbeat_seconds > 0, "tracking.heartbeat_seconds", "a duration > 0", self.heartbeat_seconds)
        _require(urlsplit(self.uri).password is None, "tracking.uri",
                 "a URI without credentials: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD instead",
                 "<redacted>")


@dataclass
class Config:
    backbone: BackboneConfig = MISSING
    arch: ArchConfig = MISSING
    loss: LossConfig = MISSING
    data: DataConfig = MISSING
    preprocess: PreprocessConfig = MISSING
    augmentation: AugmentationConfig = MISSING
    trainer: TrainerConfig = MISSING
    tracking: TrackingConfig = MISSING
    inference: InferenceConfig = field(default_factory=InferenceConfig)  # runs logged before it existed reload
    cv: CvConfig = field(default_factory=CvConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    image_size: int = 256
    seed: int = 42
    encoder_weights: str | None = None  # null: random init; "imagenet": downloads (needs network)
    # conf/config.yaml holds the defaults; these say the same (tests/test_config.py checks), for runs stored before
    # a key existed. 0.9: Keras' 0.99 lets BatchNorm statistics lag behind the weights when training from scratch
    batchnorm_momentum: float | None = 0.9  # null: the backbone's own (0.99)
    verbose: bool = False  # TensorFlow's notices and Keras' progress bars on the terminal
    cache_dir: str | None = str(PROJECT_ROOT / ".cache" / "arrays")  # decoded samples kept between runs; null: off
    resume: str | None = None  # run id of a KILLED or FAILED run to continue from its last checkpoint

    def __post_init__(self) -> None:
        multiple = self.arch.size_multiple
        _require(self.image_size >= multiple and self.image_size % multiple == 0, "image_size",
                 f"a multiple of {multiple} for arch={self.arch.name.value}", self.image_size)
        _require(self.encoder_weights in (None, "imagenet"), "encoder_weights", "null or 'imagenet'",
                 self.encoder_weights)
        _require(self.inference.stride is None or self.inference.stride <= self.image_size, "inference.stride",
                 f"null or at most image_size ({self.image_size}) so windows overlap or touch", self.inference.stride)
        _require(self.batchnorm_momentum is None or 0 <= self.batchnorm_momentum < 1, "batchnorm_momentum",
                 "null or a value in [0, 1)", self.batchnorm_momentum)
        if (self.arch.name is Arch.pspnet and self.data.sampling is Sampling.patches
                and self.trainer.validation_windows is None):
            raise ConfigError("trainer.validation_windows=null is invalid for arch=pspnet with data.sampling=patches: "
                              "expected a number of windows (PSPNet is built for one image_size input, which whole "
                              "validation images do not fit)")
        if self.trainer.monitor is None:
            self.trainer.monitor = TASK_MONITOR[self.data.task.value]
        channels = self.data.channels
        for key in ("class_weights", "positive_weights"):
            values = getattr(self.loss, key)
            _require(not values or len(values) == len(channels), f"loss.{key}",
                     f"empty or one weight per channel {channels}", values)


class ThresholdRule(Enum):
    source = "source"  # the run's own validation threshold, as `predict` and the served model apply it
    target = "target"  # chosen on the target dataset's validation split: optimistic, it needs the target's labels


@dataclass
class EvaluateConfig(Config):
    """`python -m retina_seg.evaluate`: a logged model, re-evaluated on the configured dataset, or several
    runs on several datasets (`targets`): the trained-on x tested-on table."""

    run_id: str | None = None
    trust_model: bool = False  # rebuild model JSON holding objects retina-seg never writes (they can run code)
    run_ids: List[str] = field(default_factory=list)  # more runs for the cross-dataset table
    targets: List[str] = field(default_factory=list)  # dataset names (conf/data) to evaluate every run on
    roots: Dict[str, str | None] = field(default_factory=dict)  # data.root of each target dataset
    threshold: ThresholdRule = ThresholdRule.source  # the binarisation threshold on a dataset other than the run's own

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(not self.run_ids or bool(self.targets), "run_ids", "to come with targets=[...]", self.run_ids)


@dataclass
class PredictConfig(Config):
    """`python -m retina_seg.predict`: masks for new images from a run or a model folder."""

    run_id: str | None = None
    model: str | None = None  # a folder with <BACKBONE>_Retinal.json/.h5 (and the run's config.yaml)
    input: str = MISSING  # an image file or a folder of images
    output: str = MISSING
    trust_model: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        _require((self.run_id is None) != (self.model is None), "run_id / model", "exactly one of them",
                 {"run_id": self.run_id, "model": self.model})


@dataclass
class ReconcileConfig:
    """`python -m retina_seg.reconcile`: mark RUNNING runs whose process is gone as KILLED."""

    tracking: TrackingConfig = MISSING
    all_experiments: bool = False  # every experiment of the store, not only tracking.experiment
    stale_minutes: float | None = 10.0  # other hosts' runs: dead after this long without a heartbeat; null: skip

    def __post_init__(self) -> None:
        _require(self.stale_minutes is None or self.stale_minutes > 0, "stale_minutes", "null or minutes > 0",
                 self.stale_minutes)


@dataclass
class CompareConfig:
    """`python -m retina_seg.compare`: a table of the runs of one sweep or experiment."""

    tracking: TrackingConfig = MISSING
    sweep: str | None = None  # a sweep id (the `sweep_id` tag); null: the most recent sweep
    experiment: str | None = None  # compare every run of this experiment instead
    metric: str = "test_f1"  # sort key: a column of the table or any logged metric
    ascending: bool = False
    verbose: bool = False


class ServerAction(Enum):
    start = "start"
    stop = "stop"


class Permission(Enum):
    READ = "READ"
    EDIT = "EDIT"
    MANAGE = "MANAGE"
    NO_PERMISSIONS = "NO_PERMISSIONS"


@dataclass
class ServerConfig:
    """`python -m retina_seg.server`: PostgreSQL and an MLflow tracking server on it, for a team."""

    action: ServerAction = ServerAction.start
    folder: str = MISSING  # database files, artifacts, logs and the mode-600 password files
    host: str = "127.0.0.1"
    port: int = 5000
    db_port: int = 5433
    workers: int = 2
    artifacts_destination: str | None = None  # null: <folder>/artifacts; or s3://bucket/prefix (S3-compatible)
    auth: bool = False  # MLflow's basic-auth app: every request needs an account
    default_permission: Permission = Permission.EDIT  # what every account may do in experiments it did not create

    def __post_init__(self) -> None:
        for key in ("port", "db_port"):
            _require(1024 <= getattr(self, key) <= 65535, f"server.{key}", "a port in [1024, 65535]",
                     getattr(self, key))
        _require(self.port != self.db_port, "server.db_port", "a port other than server.port", self.db_port)
        _require(1 <= self.workers <= 64, "server.workers", "an integer in [1, 64]", self.workers)


@dataclass
class UploadConfig:
    """`python -m retina_seg.upload`: send a job's locally kept files to the run whose server it lost."""

    folder: str = MISSING  # the job folder the run's last line named
    tracking_uri: str | None = None  # null: the server the run was started on


@dataclass
class PromoteConfig:
    """`python -m retina_seg.promote`: register the best run of a sweep and point an alias at it."""

    tracking: TrackingConfig = MISSING
    sweep: str = MISSING  # a sweep id (the `sweep_id` tag of its runs)
    metric: str = "val_f1"  # any metric logged by every run of the sweep
    mode: Mode = Mode.max  # max: the highest value wins
    model_name: str = "retina-seg"  # the registered model that gets a new version
    alias: str = "champion"

    def __post_init__(self) -> None:
        for key in ("sweep", "metric", "model_name", "alias"):
            _require(bool(getattr(self, key).strip()), key, "a non-empty name", getattr(self, key))


class ExportFormat(Enum):
    savedmodel = "savedmodel"  # TensorFlow SavedModel (TF Serving, tf.saved_model.load)
    tflite = "tflite"  # TensorFlow Lite flatbuffer, fixed to one image_size window
    onnx = "onnx"  # ONNX through tf2onnx (onnxruntime)


@dataclass
class ExportConfig:
    """`python -m retina_seg.export`: a run's network as a standalone file plus what inference needs."""

    tracking: TrackingConfig = MISSING
    run_id: str | None = None
    model: str | None = None  # a folder with <BACKBONE>_Retinal.json/.h5 and the run's config.yaml
    format: ExportFormat = MISSING
    output: str = MISSING  # a folder; created, must be empty if it exists
    trust_model: bool = False
    opset: int = 17  # onnx only
    precision: str = "32"  # what the exported network computes in; weights are float32 whatever it is

    def __post_init__(self) -> None:
        _require((self.run_id is None) != (self.model is None), "run_id / model", "exactly one of them",
                 {"run_id": self.run_id, "model": self.model})
        _require(13 <= self.opset <= 21, "opset", "an ONNX opset between 13 and 21", self.opset)
        _require(self.precision in PRECISIONS[1:], "precision", f"one of {', '.join(PRECISIONS[1:])}", self.precision)
        _require(self.precision == "32" or self.format is ExportFormat.savedmodel, "precision",
                 "32 for TFLite and ONNX exports (a mixed-precision network exports as a SavedModel only)",
                 self.precision)


def read_run_config(path: Path) -> DictConfig:
    """A run's `config.yaml` as plain data, refused when it holds an interpolation: `run` writes it resolved, so
    `${...}` in it was written by someone else, and resolving it would run a resolver of their choosing
    (`${oc.env:MLFLOW_TRACKING_PASSWORD}` would copy a secret into the resumed run's params)."""
    loaded = OmegaConf.load(path)
    for key, value in _nodes(OmegaConf.to_container(loaded, resolve=False), ""):
        _require(not (isinstance(value, str) and "${" in value), key.lstrip("."),
                 f"a plain value ({path.name} is stored resolved; an interpolation in it is never resolved)", value)
    return loaded


def validate(cfg: DictConfig) -> Config:
    """Turn a composed config into typed, range-checked objects; raise ConfigError with one clear line."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{missing[0]} is required: set it on the command line, e.g. {missing[0]}=<value>")
    try:
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:  # a wrong type or value, or a range check wrapped by omegaconf
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, ConfigError):
            raise cause from None
        raise ConfigError(str(exc).splitlines()[0]) from exc


def inference_in_force(trained: InferenceConfig, overrides: Sequence[str]) -> tuple[InferenceConfig, List[str]]:
    """A run's own inference settings (what its recipe measured) with the `inference.<key>=<value>` overrides
    of this command line on top, and the keys those overrides set."""
    dotlist = [o.lstrip("+") for o in overrides if o.lstrip("+").startswith("inference.")]
    given = [o.split("=", 1)[0].removeprefix("inference.") for o in dotlist]
    merged = OmegaConf.merge(OmegaConf.structured(trained),
                             OmegaConf.from_dotlist([o.removeprefix("inference.") for o in dotlist]))
    try:
        return OmegaConf.to_object(merged), given
    except OmegaConfBaseException as exc:
        cause = exc.__cause__ or exc.__context__
        raise (cause if isinstance(cause, ConfigError) else ConfigError(str(exc).splitlines()[0])) from None


def describe_inference(settings: InferenceConfig, given: Sequence[str]) -> str:
    """One line for the terminal: every inference setting in force, marked where the command line set it."""
    shown = [f"{key}={_shown(getattr(settings, key))}{' (command line)' if key in given else ''}"
             for key in ("mode", "flip_tta", "precision", "rescale", "fov_mask", "stride", "batch_size")]
    return "inference settings (the run's own unless marked): " + ", ".join(shown)


def refuse_overridden_smoke_trainer(trainer: DictConfig, choices: Mapping[str, Any], overrides: List[str]) -> None:
    """`trainer=fast` with an experiment: the experiment's trainer keys are merged after the trainer group, so the
    job would be neither a smoke run nor the recipe (the recipe's epochs and steps, run eagerly as fast's two steps
    are). Raise one line naming `debug=fast`, which conf/config.yaml merges after the experiment, unless the
    experiment leaves every key of trainer/fast.yaml as it is (or the command line sets it). `choices`: Hydra's
    runtime choices; `overrides`: the command line's."""
    experiment = choices.get("experiment")
    if choices.get("trainer") != "fast" or not experiment or choices.get("debug"):
        return
    preset = OmegaConf.merge(OmegaConf.structured(TrainerConfig), OmegaConf.load(CONF_DIR / "trainer" / "fast.yaml"))
    given = {override.lstrip("+~").split("=")[0] for override in overrides}
    changed = [f"trainer.{key}={_shown(trainer[key])}" for key in preset
               if trainer[key] != preset[key] and f"trainer.{key}" not in given]
    if changed:
        command = " ".join("debug=fast" if override == "trainer=fast" else override for override in overrides)
        raise ConfigError(f"trainer=fast with experiment={experiment}: the experiment's {', '.join(changed)} replace "
                          "trainer=fast's, so this is neither a smoke run nor the recipe; smoke-test a recipe with "
                          f"debug=fast: python -m retina_seg.run {command}")


def compose_tree(name: str = "config", overrides: List[str] | None = None) -> DictConfig:
    """The conf/ tree composed as the command line would, inside a running Hydra app or outside one."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose(config_name=name, overrides=list(overrides or []))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides or []))


def _shown(value: Any) -> str:
    if isinstance(value, Enum):
        return value.value
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def register() -> None:
    """Make the schema and the `${project_root:}` resolver known to Hydra and OmegaConf."""
    if not OmegaConf.has_resolver("project_root"):
        OmegaConf.register_new_resolver("project_root", lambda: str(PROJECT_ROOT))
    if not OmegaConf.has_resolver("shown"):  # a value as the command line spells it
        OmegaConf.register_new_resolver("shown", _shown)
    if not OmegaConf.has_resolver("choices"):  # the options of a config group, for the --help pages
        OmegaConf.register_new_resolver("choices", lambda group: ", ".join(
            sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))))
    store = ConfigStore.instance()
    for name, node in (("train", Config), ("evaluate", EvaluateConfig), ("predict", PredictConfig),
                       ("compare", CompareConfig), ("server", ServerConfig), ("upload", UploadConfig),
                       ("promote", PromoteConfig), ("export", ExportConfig),
                       ("reconcile", ReconcileConfig)):
        store.store(group="schema", name=name, node=node, package="_global_")


register()
