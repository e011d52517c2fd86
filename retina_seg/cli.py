"""How every app starts and ends (`run_app`: exit codes, Hydra's errors, interruptions) and the console scripts
(`retina-seg-train`, ...): each app's `main` through `run_app`, so that an installed command exits with the same
codes as `python -m retina_seg.<app>` (2 for Hydra's own errors)."""

from __future__ import annotations

import functools
import signal
import sys
import traceback
from importlib import import_module
from typing import Callable

import mlflow
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode

from retina_seg.errors import USER_ERROR, UserError, sigterm_as_interrupt


def user_errors(task: Callable) -> Callable:
    """Wrap an app's task function (below `@hydra.main`): a UserError becomes one `error: ` line per line of its
    message and exit 2. In a multirun it is raised on, so that Hydra records the job as failed and the sweep
    goes on. Hydra would otherwise print it as a crash and exit 1."""

    @functools.wraps(task)
    def wrapped(cfg):
        try:
            return task(cfg)
        except UserError as exc:
            for line in str(exc).splitlines() or [type(exc).__name__]:
                print(f"error: {line}", file=sys.stderr)
            if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
                raise
            sys.exit(USER_ERROR)

    return wrapped


def run_app(main: Callable[[], object]) -> None:
    """Call a `@hydra.main` app. Hydra answers its own errors (an unknown key or group option, a bad
    override, a missing config) with exit 1 raised while it handles them: those are user errors, exit 2.
    Every other exit keeps its code: the task's own, and 1 for an exception the task did not handle.
    With HYDRA_FULL_ERROR=1 Hydra raises its errors as they are: their traceback, then exit 2 as well.
    Ctrl-C and SIGTERM end any app with one line and 130 / 143 (a run it had open is marked KILLED)."""
    sigterm_as_interrupt()
    sys.argv[1:] = [selecting_experiment(arg) for arg in sys.argv[1:]]
    try:
        main()
    except SystemExit as exc:
        if exc.code == 1 and isinstance(exc.__context__, HydraException):
            sys.exit(USER_ERROR)
        raise
    except HydraException:
        traceback.print_exc()
        sys.exit(USER_ERROR)
    except KeyboardInterrupt as exc:
        sys.exit(interrupted(exc, "its files logged"))


def selecting_experiment(arg: str) -> str:
    """`+experiment=<name>` as `experiment=<name>`: conf/config.yaml now lists the experiment group (so that
    `debug=` can be merged after it), and Hydra refuses to append a group its defaults list already has; the
    spelling every earlier command used keeps selecting the recipe."""
    return arg[1:] if arg.startswith("+experiment=") else arg


def interrupted(exc: KeyboardInterrupt, logged: str = "best weights and history logged") -> int:
    """Say in one line what an interruption left behind (`logged`: what a KILLED run kept); returns the
    exit code (128 + signal)."""
    signum = getattr(exc, "signum", signal.SIGINT)
    run = mlflow.last_active_run()
    if run is None:
        print("interrupted before the run started: nothing was logged", file=sys.stderr)
    elif run.info.status == "KILLED":
        print(f"interrupted: run {run.info.run_id} marked KILLED; {logged}", file=sys.stderr)
    else:
        print(f"interrupted after run {run.info.run_id} ended {run.info.status}", file=sys.stderr)
    return 128 + signum


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
