"""The console scripts (`retina-seg-train`, ...): each app's `main` through `run_app`, so that an installed
command exits with the same codes as `python -m retina_seg.<app>` (2 for Hydra's own errors)."""

from __future__ import annotations

from importlib import import_module
from typing import Callable

from retina_seg.tracking.exits import run_app


def _app(module: str) -> Callable[[], None]:
    return lambda: run_app(import_module(f"retina_seg.{module}").main)


train = _app("run")
evaluate = _app("evaluate")
predict = _app("predict")
compare = _app("compare")
promote = _app("promote")
export = _app("export")
reconcile = _app("reconcile")
upload = _app("upload")
server = _app("server")
