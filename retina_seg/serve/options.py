"""What `retina-seg-serve` tells the app that each of its workers builds (serve/app.py): one JSON value in the
environment, since uvicorn's workers are fresh processes that import the app by name."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass

from retina_seg.serve import MODEL_FOLDER, OPTIONS


@dataclass
class ServerOptions:
    model_uri: str  # as the user gave it: runs:/..., models:/... or a folder
    name: str | None = None  # the registered model's name (models:/ URIs)
    version: str | None = None  # its registry version (an alias resolved when the server started)
    api_keys: str | None = None  # the key file; None: no keys asked for
    metrics_need_key: bool = False  # /metrics asks for a key too
    access_log: str = "-"  # where access-log lines go: '-' for stdout, else a file appended to

    def export(self) -> None:
        os.environ[OPTIONS] = json.dumps(asdict(self))

    @classmethod
    def imported(cls) -> ServerOptions:
        """The options `retina-seg-serve` exported, or the defaults for the model folder (an app started by
        uvicorn directly)."""
        if OPTIONS in os.environ:
            return cls(**json.loads(os.environ[OPTIONS]))
        return cls(model_uri=os.environ[MODEL_FOLDER])
