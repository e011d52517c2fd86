"""Exit codes: Hydra's own errors are user errors (2), whatever the task does keeps its code, and an
installed console script exits as `python -m` does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import hydra
import pytest

from retina_seg.tracking.exits import INTERNAL_ERROR, SERVER_LOST, USER_ERROR, run_app

QUIET = ["hydra/job_logging=none", "hydra/hydra_logging=none"]  # leave the test process's logging as it was


@hydra.main(config_path=None, version_base="1.3")
def app(cfg) -> None:
    if cfg.get("fail"):
        raise RuntimeError("a bug in the task")
    if cfg.get("leave"):
        sys.exit(int(cfg.leave))


@pytest.mark.parametrize("arguments, code", [
    (["+fail=true"], INTERNAL_ERROR),  # an exception the task did not handle: Hydra exits 1, and 1 it stays
    (["+leave=1"], INTERNAL_ERROR),
    (["+leave=3"], SERVER_LOST),
    (["no_such_key=1"], USER_ERROR),  # composition error
    (["+x=["], USER_ERROR),  # override that does not parse
])
def test_run_app_tells_hydra_errors_from_the_tasks(arguments, code, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["app", *arguments, *QUIET, f"hydra.run.dir={tmp_path}"])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    with pytest.raises(SystemExit) as leaving:
        run_app(app)
    assert leaving.value.code == code


def test_run_app_returns_when_the_task_succeeds(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["app", "+anything=1", *QUIET, f"hydra.run.dir={tmp_path}"])
    run_app(app)


def test_console_script_exits_2_on_a_bad_override(tmp_path):
    script = Path(sys.executable).parent / "retina-seg-promote"
    done = subprocess.run([str(script), "no_such_key=1", *QUIET, f"hydra.run.dir={tmp_path}"], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == USER_ERROR, done.stderr[-2000:]
    assert "no_such_key" in done.stderr
