"""Ctrl-C and SIGTERM: the first asks the loop to stop after the current iteration and save; a
second aborts. Data-loader workers ignore both and leave them to the main process."""

from __future__ import annotations

import signal
import sys
import threading

# SIGTERM is how Slurm, docker stop, Kubernetes and systemd ask a job to end (SIGKILL follows after
# a grace period): it gets what Ctrl-C gets, a checkpoint and a stop record.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopFlag:
    """A first Ctrl-C (SIGINT) or SIGTERM asks the loop to stop after the current iteration and save;
    a second one aborts (KeyboardInterrupt carrying ``signum``)."""

    def __init__(self):
        self.requested = False
        self.signum: int | None = None  # the signal that asked for the stop
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame):
        if self.requested:
            interrupt = KeyboardInterrupt()
            interrupt.signum = signum  # the CLI exits 128 + signum
            raise interrupt
        self.requested, self.signum = True, signum
        again = "Ctrl-C again" if signum == signal.SIGINT else "send it again"
        print(f"\nstopping ({signal.Signals(signum).name}): finishing this iteration and saving a checkpoint "
              f"({again} to abort)", file=sys.stderr, flush=True)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}


def ignore_stop_signals(_worker_id: int) -> None:
    # Ctrl-C reaches the whole process group, and systemd sends SIGTERM to every process of the
    # service: workers leave both to the main process, which saves.
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)

