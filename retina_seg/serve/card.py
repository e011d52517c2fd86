"""`GET /model-card`: the served model's MODEL_CARD.md (reporting/model_card.py), which travels inside the logged
model, so that whoever calls the server can read what the model is for and not for."""

from __future__ import annotations

from pathlib import Path

from retina_seg.serve.guard import JSON

PATH = "/model-card"
NO_CARD = b'{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "this model was logged without a MODEL_CARD.md"}'


class ModelCard:
    """ASGI layer: answers `GET /model-card` with the card at `path` (HTTP 404 in MLflow's error shape for a
    model logged before cards existed); passes every other request to `app`."""

    def __init__(self, app, path: Path):
        self.app = app
        self.card = path.read_bytes() if path.is_file() else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] not in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        status, kind, body = (200, b"text/markdown; charset=utf-8", self.card) if self.card is not None else (
            404, JSON, NO_CARD)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
