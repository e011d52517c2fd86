"""Exit codes of the command-line apps, the same for every one of them:

0 done, 1 internal error or a failed run, 2 user error (bad config, bad data, unusable store or folder,
including Hydra's own composition errors), 128 + signal when interrupted (130 Ctrl-C, 143 SIGTERM).
"""

from __future__ import annotations

import signal
import sys
from typing import Callable

import mlflow
from hydra.core.hydra_config import HydraConfig

INTERNAL_ERROR = 1
USER_ERROR = 2


class AppExit(SystemExit):
    """An exit code chosen by the app's task itself: passed through as it is."""


def run_app(main: Callable[[], object]) -> None:
    """Call a `@hydra.main` app; Hydra exits 1 on its own composition errors (unknown group option, bad
    override), before the task starts: those are user errors. (Hydra has reset its config by the time
    an exit from the task arrives here, so the task's own exits are told apart by their class.)"""
    try:
        main()
    except AppExit:
        raise
    except SystemExit as exc:
        if exc.code == 1 and not HydraConfig.initialized():
            sys.exit(USER_ERROR)
        raise


def interrupted(exc: KeyboardInterrupt) -> int:
    """Say in one line what an interruption left behind; returns the exit code (128 + signal)."""
    signum = getattr(exc, "signum", signal.SIGINT)
    run = mlflow.last_active_run()
    if run is None:
        print("interrupted before the run started: nothing was logged", file=sys.stderr)
    else:
        print(f"interrupted: run {run.info.run_id} marked KILLED; best weights and history logged", file=sys.stderr)
    return 128 + signum
