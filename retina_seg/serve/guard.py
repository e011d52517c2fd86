"""What MLflow's scoring server lacks in front of the served model: a cap on the request body, and a
one-line answer to a body that is not JSON.

MLflow's server (uvicorn + FastAPI) reads any body whole into memory, and answers a body that is not
JSON with its parser's message, which goes on to echo the body over several lines. This ASGI guard
answers both before MLflow sees the request: a body over the cap is read to its end without being
kept (so every HTTP client gets the answer rather than a reset connection) and gets HTTP 413; an
empty or non-JSON body gets HTTP 400; a body that does not arrive in time gets HTTP 408. Every
other request reaches MLflow unchanged. Each refusal is noted, with its reason, in the request's record
(exchange.py) for `/metrics`.
"""

from __future__ import annotations

import asyncio
import json

from retina_seg.serve.exchange import NOT_JSON, TIMEOUT, TOO_LARGE, refused

JSON = b"application/json"
EXAMPLE = '{"dataframe_split": {"columns": ["image"], "data": [["<base64 image file>"]]}}'


def json_problem(body: bytes) -> str | None:
    """Why `body` is not a JSON document (one line, never quoting the body), or None when it is one."""
    if not body.strip():
        return f"the request body is empty: expected JSON such as {EXAMPLE}"
    try:
        json.loads(body)
    except UnicodeDecodeError:
        return "the request body is not UTF-8 text: expected JSON"
    except json.JSONDecodeError as error:
        return f"the request body is not JSON ({error.msg} at line {error.lineno} column {error.colno})"
    return None


class RequestGuard:
    """ASGI middleware around the scoring app: caps `POST /invocations` bodies at `max_body_mb`, gives the
    body `timeout` seconds to arrive (MLflow's own request timeout only starts once the guard hands it on),
    and refuses a request without a content type or an empty or non-JSON body sent as application/json,
    each with one line in MLflow's error shape."""

    def __init__(self, app, max_body_mb: float, timeout: float):
        self.app = app
        self.max_body_mb = max_body_mb
        self.max_bytes = int(max_body_mb * 2**20)
        self.timeout = timeout

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/invocations":
            await self.app(scope, receive, send)
            return
        # the first one, as Starlette (and so MLflow) reads it
        content_type = next((value for name, value in scope["headers"] if name == b"content-type"), None)
        try:
            async with asyncio.timeout(self.timeout):
                body, size = await read_body(receive, self.max_bytes)
        except TimeoutError:
            await refuse(send, 408, "REQUEST_TIMEOUT", f"the request body did not arrive within {self.timeout:g} s",
                         TIMEOUT)
            return
        if body is None:  # the client went away
            return
        if size > self.max_bytes:
            await refuse(send, 413, "REQUEST_LIMIT_EXCEEDED", f"the request body is {size / 2**20:.1f} MB: the "
                         f"limit is {self.max_body_mb:g} MB (serve.max_body_mb)", TOO_LARGE)
            return
        if content_type is None:
            await refuse(send, 415, "BAD_REQUEST", "the request has no Content-Type: expected application/json",
                         NOT_JSON)
            return
        is_json = content_type.split(b";")[0].strip().lower() == JSON
        # parsing a large body takes a while: off the event loop, so that /ping and other requests go on
        problem = await asyncio.to_thread(json_problem, body) if is_json else None
        if problem:
            await refuse(send, 400, "BAD_REQUEST", problem, NOT_JSON)
            return
        await self.app(scope, replay(body, receive), send)


async def read_body(receive, keep_bytes: int) -> tuple[bytes | None, int]:
    """Read a request's body to its end: (the body, or b"" once it is over `keep_bytes`, or None if the client
    disconnected; its size). Over the cap the body is read to its end without being kept, so that every HTTP
    client gets the answer, not a reset connection."""
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None, size
        chunk = message.get("body", b"")
        size += len(chunk)
        if size <= keep_bytes:
            chunks.append(chunk)
        else:
            chunks.clear()
        more = message.get("more_body", False)
    return b"".join(chunks), size


def replay(body: bytes, receive):
    """An ASGI `receive` that hands the app the body already read, then listens to the server's own
    `receive` (which waits for the client to disconnect), as the app would without the guard."""
    pending = True

    async def replayed() -> dict:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def refuse(send, status: int, code: str, message: str, reason: str, headers: tuple = ()) -> None:
    """Answer in MLflow's error shape, one line, and note `reason` (exchange.REASONS) in the request's record."""
    refused(reason)
    content = json.dumps({"error_code": code, "message": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", JSON), (b"content-length", str(len(content)).encode()), *headers]})
    await send({"type": "http.response.body", "body": content})
