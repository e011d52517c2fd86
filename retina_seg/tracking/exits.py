"""Exit codes of the command-line apps: 0 done, 1 internal error, 2 user error (bad config or data,
including Hydra's own composition errors such as an unknown group option or a bad override)."""

from __future__ import annotations

import sys
from typing import Callable

from hydra.core.hydra_config import HydraConfig

USER_ERROR = 2


def run_app(main: Callable[[], object]) -> None:
    """Call a `@hydra.main` app; Hydra exits 1 on its own composition errors, before the task starts:
    those are user errors."""
    try:
        main()
    except SystemExit as exc:
        if exc.code == 1 and not HydraConfig.initialized():
            sys.exit(USER_ERROR)
        raise
