"""One request to `retina-seg-serve` and what the layers it passes learn about it, for the access log and
`/metrics`: the access layer (access.py) opens the record, the key check names the caller, a layer that
refuses the request says why, the model adds its time and each image's drift statistics.

The record travels in a context variable, so that the model, which MLflow's scoring server calls in a thread
of its own (asyncio.to_thread copies the context), reaches it without MLflow passing it on. Outside
`retina-seg-serve` (`mlflow models serve`, a model loaded in a notebook) there is no record and nothing is kept.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import List

from retina_seg.inference.drift import ImageStatistics

# why a request was refused: the `reason` label of retina_seg_refused_requests_total
TOO_LARGE = "too_large"  # body over serve.max_body_mb, or an image file over serve.max_image_mb
NOT_JSON = "not_json"  # no Content-Type, an empty or non-JSON body
TIMEOUT = "timeout"  # the body did not arrive in time
NOT_AN_IMAGE = "not_an_image"  # no image column, an empty row, not base64, not an image file
TRUNCATED = "truncated"  # an image file that does not decode to its end
BAD_SIZE = "bad_size"  # sides outside serve.min_side..serve.max_side
BAD_PARAMETER = "bad_parameter"  # e.g. params.threshold outside [0, 1]
UNAUTHENTICATED = "unauthenticated"  # no API key where one is needed
FORBIDDEN = "forbidden"  # an API key the server does not know
REASONS = (TOO_LARGE, NOT_JSON, TIMEOUT, NOT_AN_IMAGE, TRUNCATED, BAD_SIZE, BAD_PARAMETER, UNAUTHENTICATED, FORBIDDEN)


@dataclass
class Exchange:
    request_id: str
    key: str | None = None  # the name of the API key it carried (never the key)
    refused: str | None = None  # one of REASONS
    model_seconds: float | None = None  # time in the model's predict
    images: List[ImageStatistics] = field(default_factory=list)


CURRENT: ContextVar[Exchange | None] = ContextVar("retina_seg_exchange", default=None)


def current() -> Exchange | None:
    """The record of the request being answered, or None outside retina-seg-serve."""
    return CURRENT.get()


def refused(reason: str) -> None:
    """Note why the request being answered is refused (nothing outside retina-seg-serve)."""
    exchange = CURRENT.get()
    if exchange is not None:
        exchange.refused = reason
