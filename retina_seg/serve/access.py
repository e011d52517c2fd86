"""The outermost layer of `retina-seg-serve`: every request gets a request id and a record (exchange.py), and
when it is answered one JSON line in the access log and its figures in `/metrics`.

An access-log line holds the time (UTC), the request id, method, route, HTTP status (499: the client left
before its answer), seconds, the request body's size, the API key's name and why the request was refused, if it
was: never a body, an image, a query string or a key. The request id is the client's `X-Request-ID` when it is a
plain token (letters, digits, `.`, `_`, `:`, `-`, at most 128), else a new one; the answer carries it back in
`X-Request-ID`.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from datetime import UTC, datetime

from retina_seg.serve import card, metrics, viewer
from retina_seg.serve.exchange import CURRENT, Exchange

REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
# the server's own paths; anything else is counted as "other", so that a scanner cannot grow /metrics
ROUTES = frozenset({"/invocations", "/ping", "/health", "/version", metrics.PATH, card.PATH, *viewer.FILES,
                    viewer.MODEL_INFO})


def route_of(path: str) -> str:
    return path if path in ROUTES else "other"


def request_id(headers) -> str:
    given = next((value for name, value in headers if name == b"x-request-id"), None)
    return given.decode("ascii") if given is not None and REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


def open_log(target: str) -> int:
    """A file descriptor to append access-log lines to: stdout for '-', else the file (created if missing).
    Each line goes out in one write, so the lines of several workers never mix."""
    if target == "-":
        return 1
    return os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)


class AccessLog:
    """ASGI layer around the whole server: request id, access-log line and `/metrics` figures per request."""

    def __init__(self, app, log: int):
        self.app = app
        self.log = log

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = Exchange(request_id(scope["headers"]))
        status, size, started = None, 0, time.perf_counter()
        gone = False

        async def counted() -> dict:
            nonlocal size, gone
            message = await receive()
            size += len(message.get("body", b"")) if message["type"] == "http.request" else 0
            gone = gone or message["type"] == "http.disconnect"
            return message

        async def tagged(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"x-request-id", exchange.request_id.encode())]}
            await send(message)

        token = CURRENT.set(exchange)
        metrics.IN_FLIGHT.inc()
        try:
            await self.app(scope, counted, tagged)
        finally:
            metrics.IN_FLIGHT.dec()
            CURRENT.reset(token)
            # never answered: 499 (nginx's "client closed request") if the client went away, else the 500 uvicorn sends
            status = status or (499 if gone else 500)
            seconds, route = time.perf_counter() - started, route_of(scope["path"])
            metrics.observe(route, scope["method"], status, seconds, size, exchange)
            line = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                    "request_id": exchange.request_id, "method": scope["method"], "route": route, "status": status,
                    "seconds": round(seconds, 4), "body_bytes": size, "key": exchange.key, "refused": exchange.refused}
            os.write(self.log, (json.dumps(line) + "\n").encode())
