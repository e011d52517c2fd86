"""`GET /metrics` of `retina-seg-serve`, in Prometheus' text format (prometheus-client): usage, speed, refusals,
the model served, and what its answers look like beside what they looked like on validation (drift).

| metric | labels | what |
| --- | --- | --- |
| retina_seg_requests_total | route, method, status, key | requests answered (`key`: the API key's name, or "") |
| retina_seg_request_seconds | route | histogram: time from the request's arrival to its answer |
| retina_seg_model_seconds | | histogram: time in the model per answered /invocations request |
| retina_seg_requests_in_flight | | requests being answered now, over all workers |
| retina_seg_request_body_bytes | route | histogram: request body sizes |
| retina_seg_refused_requests_total | reason | refused requests, by exchange.REASONS |
| retina_seg_model_info | name, version, run_id, classes, precision | 1, naming the served model |
| retina_seg_foreground_fraction | class | histogram: per answered image, predicted foreground / field of view |
| retina_seg_fov_fraction | | histogram: per answered image, field of view / image |
| retina_seg_validation_foreground_fraction | class, statistic | the same on the validation images at training time |
| retina_seg_validation_fov_fraction | statistic | (statistic: min, p05, median, p95, max over them) |
| retina_seg_validation_images | | how many validation images those figures come from |

`retina-seg-serve` always runs prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, a folder it
creates and removes), so every worker of `--workers N` writes its own figures and any of them answers the sum.
"""

from __future__ import annotations

import os
from typing import List

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from retina_seg.inference.drift import STATISTICS
from retina_seg.serve import METRICS_FOLDER
from retina_seg.serve.exchange import REASONS, Exchange

PATH = "/metrics"
SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120)
BYTES = tuple(2**k for k in range(10, 27, 2))  # 1 KB .. 64 MB
# foreground shares range from 1e-4 (microaneurysms) to ~0.15 (vessels) and beyond for a broken model
FRACTIONS = (0.0001, 0.0003, 0.001, 0.003, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.3, 0.5, 1.0)
FOV_FRACTIONS = tuple(round(0.05 * k, 2) for k in range(1, 21))

REQUESTS = Counter("retina_seg_requests", "Requests answered, by route, method, HTTP status and API key name",
                   ["route", "method", "status", "key"])
LATENCY = Histogram("retina_seg_request_seconds", "Seconds from a request's arrival to its answer", ["route"],
                    buckets=SECONDS)
MODEL_TIME = Histogram("retina_seg_model_seconds", "Seconds in the model (decode, predict, encode) per answered "
                       "/invocations request", buckets=SECONDS)
IN_FLIGHT = Gauge("retina_seg_requests_in_flight", "Requests being answered now, over all workers",
                  multiprocess_mode="livesum")
BODY = Histogram("retina_seg_request_body_bytes", "Request body sizes in bytes", ["route"], buckets=BYTES)
REFUSED = Counter("retina_seg_refused_requests", "Requests refused, by reason", ["reason"])
MODEL = Gauge("retina_seg_model_info", "The served model (value 1)", ["name", "version", "run_id", "classes",
                                                                      "precision"], multiprocess_mode="max")
FOREGROUND = Histogram("retina_seg_foreground_fraction", "Per answered image and class: predicted foreground "
                       "pixels / field-of-view pixels, at the model's own thresholds", ["class"], buckets=FRACTIONS)
FOV = Histogram("retina_seg_fov_fraction", "Per answered image: field-of-view pixels / image pixels",
                buckets=FOV_FRACTIONS)
EXPECTED_FOREGROUND = Gauge("retina_seg_validation_foreground_fraction", "retina_seg_foreground_fraction over the "
                            "validation images at training time", ["class", "statistic"], multiprocess_mode="max")
EXPECTED_FOV = Gauge("retina_seg_validation_fov_fraction", "retina_seg_fov_fraction over the validation images at "
                     "training time", ["statistic"], multiprocess_mode="max")
EXPECTED_IMAGES = Gauge("retina_seg_validation_images", "Validation images the validation figures come from",
                        multiprocess_mode="max")


def describe_model(name: str | None, version: str | None, run_id: str | None, channels: List[str], precision: str,
                   validation: dict | None) -> None:
    """Set the model's info and its validation figures (`validation`: the run's validation statistics record,
    None for a model logged before they existed), and make every per-class and per-reason series exist at 0."""
    MODEL.labels(name or "", version or "", run_id or "", ",".join(channels), precision).set(1)
    for channel in channels:
        FOREGROUND.labels(channel)
    for reason in REASONS:
        REFUSED.labels(reason)
    if validation is None:
        return
    summary = validation["summary"]
    EXPECTED_IMAGES.set(summary["images"])
    for statistic in STATISTICS:
        if statistic in summary["fov_fraction"]:
            EXPECTED_FOV.labels(statistic).set(summary["fov_fraction"][statistic])
        for channel in channels:
            if statistic in summary["foreground_fraction"].get(channel, {}):
                EXPECTED_FOREGROUND.labels(channel, statistic).set(summary["foreground_fraction"][channel][statistic])


def observe(route: str, method: str, status: int, seconds: float, body_bytes: int, exchange: Exchange) -> None:
    """Count one answered request and what the layers it passed noted in its record."""
    REQUESTS.labels(route, method, str(status), exchange.key or "").inc()
    LATENCY.labels(route).observe(seconds)
    BODY.labels(route).observe(body_bytes)
    if exchange.refused:
        REFUSED.labels(exchange.refused).inc()
    if exchange.model_seconds is not None:
        MODEL_TIME.observe(exchange.model_seconds)
    for image in exchange.images:
        FOV.observe(image.fov_fraction)
        for channel, fraction in image.foreground.items():
            FOREGROUND.labels(channel).observe(fraction)


def exposition() -> bytes:
    """Every worker's figures summed (multiprocess mode), or this process's."""
    if METRICS_FOLDER not in os.environ:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


class MetricsEndpoint:
    """ASGI layer: answers `GET /metrics`; passes every other request to `app`."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        body = exposition()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode()),
                                (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
