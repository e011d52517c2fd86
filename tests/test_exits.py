"""Exit codes: Hydra's own errors are user errors (2), whatever the task does keeps its code, and an
installed console script exits as `python -m` does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import hydra
import pytest

from retina_seg.cli import run_app, user_errors
from retina_seg.config import PROJECT_ROOT
from retina_seg.data.loading import DataError
from retina_seg.errors import INTERNAL_ERROR, SERVER_LOST, USER_ERROR
from tests.conftest import default_sigint

pytestmark = pytest.mark.slow  # end-to-end: left out of make test-fast

QUIET = ["hydra/job_logging=none", "hydra/hydra_logging=none"]  # leave the test process's logging as it was


@hydra.main(config_path=None, version_base="1.3")
@user_errors
def app(cfg) -> None:
    if cfg.get("fail"):
        raise RuntimeError("a bug in the task")
    if cfg.get("bad_file"):
        raise DataError("a.png: unreadable image\nb.png: empty file (0 bytes)")
    if cfg.get("leave"):
        sys.exit(int(cfg.leave))
    if cfg.get("signal"):  # a real signal to this process, as Ctrl-C or a scheduler sends it
        os.kill(os.getpid(), int(cfg.signal))


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


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_any_app_ends_an_interruption_with_one_line_and_128_plus_the_signal(signum, tmp_path):
    """In a process of its own, which sends itself the signal while its task runs."""
    done = subprocess.run([sys.executable, "-c", "from tests.test_exits import app, run_app; run_app(app)",
                           f"+signal={int(signum)}", *QUIET, f"hydra.run.dir={tmp_path}"], capture_output=True,
                          text=True, timeout=300, cwd=PROJECT_ROOT, preexec_fn=default_sigint)
    assert done.returncode == 128 + signum, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == "interrupted before the run started: nothing was logged"
    assert "Traceback" not in done.stderr


def test_a_user_error_is_one_error_line_per_problem_and_exit_2_a_bug_keeps_its_traceback(tmp_path, monkeypatch,
                                                                                          capsys):
    monkeypatch.setattr(sys, "argv", ["app", "+bad_file=true", *QUIET, f"hydra.run.dir={tmp_path}"])
    with pytest.raises(SystemExit) as leaving:
        run_app(app)
    assert leaving.value.code == USER_ERROR
    assert capsys.readouterr().err.splitlines() == ["error: a.png: unreadable image",
                                                    "error: b.png: empty file (0 bytes)"]
    monkeypatch.setattr(sys, "argv", ["app", "+fail=true", *QUIET, f"hydra.run.dir={tmp_path}"])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    with pytest.raises(SystemExit) as leaving:
        run_app(app)
    assert leaving.value.code == INTERNAL_ERROR and "a bug in the task" in capsys.readouterr().err


def test_a_hydra_error_raised_in_full_is_a_user_error_too(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["app", "no_such_key=1", *QUIET, f"hydra.run.dir={tmp_path}"])
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(SystemExit) as leaving:
        run_app(app)
    assert leaving.value.code == USER_ERROR
    assert "Traceback" in capsys.readouterr().err  # what HYDRA_FULL_ERROR=1 asks for


def test_run_app_returns_when_the_task_succeeds(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["app", "+anything=1", *QUIET, f"hydra.run.dir={tmp_path}"])
    run_app(app)


def test_console_script_exits_2_on_a_bad_override(tmp_path):
    script = Path(sys.executable).parent / "retina-seg-promote"
    done = subprocess.run([str(script), "no_such_key=1", *QUIET, f"hydra.run.dir={tmp_path}"], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == USER_ERROR, done.stderr[-2000:]
    assert "no_such_key" in done.stderr
