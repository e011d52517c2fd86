"""`retina-seg-serve --workers N` (N > 1): uvicorn's own supervisor, with two changes. It stops on SIGINT,
SIGTERM and SIGHUP alike and remembers which, so that the command exits 128 + signal as it does with one worker
(uvicorn's supervisor exits 0, and restarts its workers on SIGHUP); and when it replaces a worker that died,
the worker's in-flight requests leave `/metrics` (prometheus-client's `mark_process_dead`). Each worker is a
process of its own that loads the model; they share the listening socket and the metrics folder."""

from __future__ import annotations

import logging
import signal

from prometheus_client import multiprocess
from uvicorn import Config
from uvicorn.supervisors import Multiprocess

log = logging.getLogger("uvicorn.error")


class Supervisor(Multiprocess):
    signum: int | None = None  # the signal that stopped it; None: a worker failed to start

    def stop(self, signum: int) -> None:
        log.info("Received %s, stopping the workers.", signal.Signals(signum).name)
        self.signum = self.signum or signum
        self.should_exit.set()

    def handle_int(self) -> None:
        self.stop(signal.SIGINT)

    def handle_term(self) -> None:
        self.stop(signal.SIGTERM)

    def handle_hup(self) -> None:
        self.stop(signal.SIGHUP)

    def keep_subprocess_alive(self) -> None:
        before = {process.pid for process in self.processes}
        super().keep_subprocess_alive()
        for pid in before - {process.pid for process in self.processes}:
            multiprocess.mark_process_dead(pid)


def run_workers(config: Config) -> int | None:
    """Serve with `config.workers` processes until a signal; returns it (None if a worker failed to start)."""
    supervisor = Supervisor(config, sockets=[config.bind_socket()])
    supervisor.run()
    return supervisor.signum
