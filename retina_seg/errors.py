"""Exit codes of the command-line apps, the same for every one of them, and the interruption they exit on:

0 done, 1 internal error or a failed run, 2 user error (bad config, bad data, unusable store or folder,
including Hydra's own composition errors), 3 tracking server lost (`run`), 128 + signal when interrupted
(130 Ctrl-C, 143 SIGTERM).
"""

from __future__ import annotations

import signal
import threading

INTERNAL_ERROR = 1
USER_ERROR = 2
SERVER_LOST = 3  # the tracking server stayed away: the run's files wait locally for `retina_seg.upload`


class UserError(Exception):
    """Something the user can fix: a config value, a data file, a run id, a folder, a store. Every app prints
    each line of the message after `error: ` and exits 2 (`cli.user_errors`); anything else is a bug and keeps
    its traceback and exit 1."""


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
