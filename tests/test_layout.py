"""The package's layering: imports run downward only, so a reader can trust a part's name.

apps (top-level modules) -> cli, team_server -> serve / evaluation -> reporting -> tracking -> training
-> inference -> model / data -> config -> errors.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from retina_seg.config import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "retina_seg"
LAYER = {"errors": 0, "config": 1, "data": 2, "model": 2, "inference": 3, "training": 4, "tracking": 5, "reporting": 6,
         "evaluation": 7, "serve": 7, "cli": 8, "team_server": 8}  # cli: how every app starts and exits
APP = 9  # every other top-level module: `python -m retina_seg.<app>` and the Hydra glue


def part(module: str) -> str:
    """'retina_seg.data.loading' -> 'data'; a top-level module is its own part."""
    return module.split(".")[1]


def layer(name: str) -> int:
    return LAYER.get(name, APP)


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("retina_seg."):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("retina_seg."))
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_run_downward(path):
    own = path.relative_to(PACKAGE).parts[0].removesuffix(".py")
    for module in imports(path):
        target = part(module)
        if target == own:
            continue
        assert layer(target) < layer(own), f"{path.relative_to(PACKAGE)} imports {module}: {own} may not use {target}"


def test_stages_never_learn_about_mlflow():
    for folder in ("data", "model", "training", "inference"):
        for path in (PACKAGE / folder).rglob("*.py"):
            assert "mlflow" not in path.read_text(), f"{path.relative_to(PACKAGE)} mentions mlflow"
