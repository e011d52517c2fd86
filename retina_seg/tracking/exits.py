"""Exit codes of the command-line apps, the same for every one of them:

0 done, 1 internal error or a failed run, 2 user error (bad config, bad data, unusable store or folder,
including Hydra's own composition errors), 3 tracking server lost (`run`), 128 + signal when interrupted
(130 Ctrl-C, 143 SIGTERM).
"""

from __future__ import annotations

import signal
import sys
import threading
import traceback
from typing import Callable

import mlflow
from hydra.errors import HydraException

INTERNAL_ERROR = 1
USER_ERROR = 2
SERVER_LOST = 3  # the tracking server stayed away: the run's files wait locally for `retina_seg.upload`


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM; `signum` says which (a command exits 128 + signum)."""

    def __init__(self, signum: int = signal.SIGINT):
        super().__init__(f"signal {signum}")
        self.signum = signum


def sigterm_as_interrupt():
    """Treat SIGTERM (scheduler time limits, `kill`) like Ctrl-C so a run ends KILLED, not RUNNING;
    returns the previous handler (None off the main thread, where handlers cannot be set)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def interrupt(signum, frame):
        raise Interrupted(signum)

    return signal.signal(signal.SIGTERM, interrupt)


def run_app(main: Callable[[], object]) -> None:
    """Call a `@hydra.main` app. Hydra answers its own errors (an unknown key or group option, a bad
    override, a missing config) with exit 1 raised while it handles them: those are user errors, exit 2.
    Every other exit keeps its code: the task's own, and 1 for an exception the task did not handle.
    With HYDRA_FULL_ERROR=1 Hydra raises its errors as they are: their traceback, then exit 2 as well.
    Ctrl-C and SIGTERM end any app with one line and 130 / 143 (a run it had open is marked KILLED)."""
    sigterm_as_interrupt()
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
