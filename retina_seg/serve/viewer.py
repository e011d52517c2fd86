"""The viewer: a page at `GET /` where a grader drops a photograph and looks at the served model's answer
painted over it (static/index.html, viewer.css, viewer.js: no build step, nothing fetched from elsewhere),
and `GET /model-info`, what the page needs to know about the model (its name, version or run id, classes,
their colours from reporting/palette.py, validation thresholds, precision, the request limits, where its card is).

The page talks to the same server's `/invocations` and nowhere else: its Content-Security-Policy forbids
every other origin, so no part of a photograph can leave the browser except to the server it came from.
This is an ASGI layer in front of the scoring app; every other request passes through unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

from retina_seg.reporting.palette import class_colours, hex_colour
from retina_seg.serve import card
from retina_seg.serve.contract import is_lesion_model, limits_of
from retina_seg.tracking import artifacts

STATIC = Path(__file__).with_name("static")
FILES = {"/": ("index.html", "text/html; charset=utf-8"),
         "/viewer/viewer.js": ("viewer.js", "text/javascript; charset=utf-8"),
         "/viewer/viewer.css": ("viewer.css", "text/css; charset=utf-8")}
MODEL_INFO = "/model-info"
PROBABILITY_SCALE = 65535  # the 16-bit probability PNGs hold p x 65535 (contract.py)
# same origin only: no script, style, image or connection to anywhere else, no framing, no form posts
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"no-referrer"), (b"cache-control", b"no-cache")]


def model_info(model, uri: str, name: str | None, version: str | None) -> dict:
    """What the page shows and needs about the served pyfunc `model`, loaded from `uri` (a local folder is
    named by its last part only: the page has no business with the server's paths), registered as `name`
    version `version` (None for a run's or a folder's model; `retina-seg-serve` resolved an alias once).
    `model_card` is the path of its card on this server, None for a model logged before cards existed."""
    served = model.unwrap_python_model()
    segmenter = served.segmenter
    channels = segmenter.channels
    return {"name": name, "version": version, "run_id": model.metadata.run_id,
            "source": Path(uri).name if Path(uri).is_dir() else uri, "classes": channels,
            "lesions": is_lesion_model(channels),
            "colours": {c: hex_colour(rgb) for c, rgb in class_colours(channels).items()},
            "thresholds": {c: float(segmenter.thresholds[c]) for c in channels},
            "precision": segmenter.predictor.precision.name,
            "max_image_mb": limits_of(model.model_config).max_image_mb, "probability_scale": PROBABILITY_SCALE,
            "model_card": card.PATH if (served.run_files / artifacts.MODEL_CARD).is_file() else None}


class Viewer:
    """ASGI app: answers GET (and HEAD) of the page, its two files and /model-info; passes the rest to `app`."""

    def __init__(self, app, info: dict):
        self.app = app
        self.answers = {path: ((STATIC / name).read_bytes(), kind) for path, (name, kind) in FILES.items()}
        self.answers[MODEL_INFO] = (json.dumps(info).encode(), "application/json")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("GET", "HEAD") or scope["path"] not in self.answers:
            await self.app(scope, receive, send)
            return
        body, kind = self.answers[scope["path"]]
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", kind.encode()), (b"content-length", str(len(body)).encode()),
                                *HEADERS]})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
