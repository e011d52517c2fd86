"""The REST contract of the served model: encoded image files in, encoded PNG masks and their figures out.

Request: a table with a string column `image`, each row the base64 bytes of an image FILE (PNG,
JPEG or TIFF; RGB, RGBA or grayscale; any size within the limits), never a float array (a 999x960
float array is tens of MB of JSON). Params: `threshold` (one level for every channel instead of the
validation-chosen ones), `return_probabilities` and `return_image`. Response: one row per image with
`height`, `width`, `scale` (the factor the photograph was seen at: its field of view matched to the training
images' width, 1 when it already was; the masks are at the photograph's own size), `fov_area` (pixels in the
field of view derived from the photograph) and per class:
`mask` (base64 PNG, 0/255), `area` (its predicted pixels), `fov_share` (area / fov_area; every predicted
pixel is inside the field of view unless inference.fov_mask=false), for a lesion model `regions` (its
8-connected predicted regions) and, when asked, `probabilities` (base64 16-bit PNG, p x 65535). A
multi-label model answers `mask_<class>`, `area_<class>`, ..., one column per class. `return_image` adds
`image`: the photograph as the model read it, a base64 RGB PNG (for clients that cannot decode TIFF).
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import Dict, List

import cv2
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema
from PIL import Image, UnidentifiedImageError

from retina_seg.config import ServeConfig
from retina_seg.data.loading import DataError, decode_image
from retina_seg.serve.exchange import BAD_SIZE, NOT_AN_IMAGE, TOO_LARGE, TRUNCATED

IMAGE = "image"
TRUST = "trust_model"  # model config key: rebuild unknown model JSON objects (the rest are ServeConfig's limits)


class RequestError(MlflowException):
    """A request the model cannot answer: HTTP 400 with this one-line reason; `refusal` names its kind for
    `/metrics` (one of exchange.REASONS).

    MLflow's scoring server rewrites an error's message to start with the request's data (fragments of
    a patient's image, over several lines); this error keeps its reason as the whole message."""

    def __init__(self, reason: str, refusal: str):
        super().__init__(reason, error_code=INVALID_PARAMETER_VALUE)
        self.refusal = refusal

    @property
    def message(self) -> str:
        return self._reason

    @message.setter
    def message(self, value: str) -> None:
        self.__dict__.setdefault("_reason", value)


def limits_of(model_config: dict | None) -> ServeConfig:
    """The request limits in a served model's config: its run's `serve` section, or what SERVING_MODEL_CONFIG
    overrides; a model logged before a limit existed gets that limit's default."""
    return ServeConfig(**{key: value for key, value in (model_config or {}).items() if key != TRUST})


def output_columns(channels: List[str]) -> Dict[str, str]:
    """Channel name -> suffix of its response columns: '' for a single-channel model, '_<class>' otherwise."""
    return {name: "" if len(channels) == 1 else f"_{name}" for name in channels}


def is_lesion_model(channels: List[str]) -> bool:
    """A model of lesion types (whose response counts regions), not of vessels."""
    return channels != ["vessels"]


def signature(channels: List[str]) -> ModelSignature:
    columns = [ColSpec("long", "height"), ColSpec("long", "width"), ColSpec("double", "scale"),
               ColSpec("long", "fov_area"),
               ColSpec("string", IMAGE, required=False)]
    for suffix in output_columns(channels).values():
        columns += [ColSpec("string", f"mask{suffix}"), ColSpec("long", f"area{suffix}"),
                    ColSpec("double", f"fov_share{suffix}"), ColSpec("string", f"probabilities{suffix}",
                                                                     required=False)]
        if is_lesion_model(channels):
            columns.append(ColSpec("long", f"regions{suffix}"))
    return ModelSignature(
        # `image` is declared optional only so that a request without it reaches the model and gets the
        # model's one-line reason (MLflow's own schema error echoes the request's data over several lines)
        inputs=Schema([ColSpec("string", IMAGE, required=False)]), outputs=Schema(columns),
        params=ParamSchema([ParamSpec("threshold", "double", None),
                            ParamSpec("return_probabilities", "boolean", False),
                            ParamSpec("return_image", "boolean", False)]))


def encode_file(image: np.ndarray, suffix: str = ".png") -> str:
    """uint8 RGB (H, W, 3) -> base64 text of an image file, as a client sends it."""
    ok, data = cv2.imencode(suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"could not encode a {suffix} image")
    return base64.b64encode(data.tobytes()).decode("ascii")


def decode_row(text, row: int, limits: ServeConfig) -> np.ndarray:
    """One request row -> uint8 RGB (H, W, 3), decoded exactly as `predict` reads a file; RequestError if the
    row is not a base64 image file within the limits (checked from its size and header before decoding)."""
    where = f"row {row}: '{IMAGE}'"
    if not isinstance(text, str) or not text:
        raise RequestError(f"{where} is empty (expected the base64 bytes of a PNG, JPEG or TIFF file)", NOT_AN_IMAGE)
    megabytes = len(text) * 3 / 4 / 2**20
    if megabytes > limits.max_image_mb:
        raise RequestError(f"{where} holds a {megabytes:.0f} MB file: the limit is {limits.max_image_mb:g} MB",
                           TOO_LARGE)
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(f"{where} is not base64 text", NOT_AN_IMAGE) from None
    try:
        width, height = Image.open(io.BytesIO(raw)).size
    except (UnidentifiedImageError, OSError):
        raise RequestError(f"{where} is not an image file (expected PNG, JPEG or TIFF bytes)", NOT_AN_IMAGE) from None
    if min(width, height) < limits.min_side or max(width, height) > limits.max_side:
        raise RequestError(f"{where} is {width}x{height}: each side must be between {limits.min_side} and "
                           f"{limits.max_side} pixels", BAD_SIZE)
    try:
        return decode_image(raw, f"row {row}")
    except DataError:
        raise RequestError(f"{where} is a truncated or corrupt image file", TRUNCATED) from None


def encode_png(pixels: np.ndarray) -> str:
    """A one-channel uint8 or uint16 array -> base64 PNG."""
    ok, data = cv2.imencode(".png", pixels)
    if not ok:
        raise ValueError("could not encode a PNG")
    return base64.b64encode(data.tobytes()).decode("ascii")


def figures(masks: np.ndarray, fov: np.ndarray, channels: List[str]) -> dict:
    """The numbers a grader reads off one image's masks (bool (H, W, C)) and field of view (H, W): `fov_area`,
    and per class `area`, `fov_share` and, for a lesion model, `regions` (8-connected), named as in the response."""
    fov_area = int(np.count_nonzero(fov))
    row = {"fov_area": fov_area}
    for c, suffix in enumerate(output_columns(channels).values()):
        area = int(np.count_nonzero(masks[..., c]))
        row[f"area{suffix}"] = area
        row[f"fov_share{suffix}"] = area / fov_area if fov_area else 0.0
        if is_lesion_model(channels):
            row[f"regions{suffix}"] = cv2.connectedComponents(masks[..., c].astype(np.uint8), connectivity=8)[0] - 1
    return row


def response_row(prob: np.ndarray, masks: np.ndarray, fov: np.ndarray, scale: float, channels: List[str],
                 with_probabilities: bool, image: np.ndarray | None = None) -> dict:
    """One image's answer: its size, the scale it was seen at, its figures and, per channel, the 0/255 mask
    (and 16-bit probabilities when asked); `image` (uint8 RGB) is sent back as a PNG when given."""
    row = {"height": prob.shape[0], "width": prob.shape[1], "scale": float(scale), **figures(masks, fov, channels)}
    for c, suffix in enumerate(output_columns(channels).values()):
        row[f"mask{suffix}"] = encode_png(masks[..., c].astype(np.uint8) * 255)
        if with_probabilities:
            row[f"probabilities{suffix}"] = encode_png(np.round(prob[..., c] * 65535).astype(np.uint16))
    if image is not None:
        row[IMAGE] = encode_file(image)
    return row
