"""Ctrl-C (SIGINT) and SIGTERM become a flag the loop checks between steps, so it can save mid-epoch.

SIGTERM is what SLURM, Kubernetes and most schedulers send before killing a job: treated like
Ctrl-C, a preempted job leaves a mid-epoch checkpoint and resumes exactly. A second signal of
the same kind gets the default behaviour (abort at once).
"""

from __future__ import annotations

import signal
from typing import Any

from toolkit.errors import Interrupted

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}  # 128 + the signal number, as shells report it


class StopFlag:
    """Context manager: while active, the first SIGINT or SIGTERM only sets ``signal``."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def raised(self) -> bool:
        return self.signal is not None

    def __enter__(self) -> StopFlag:
        for sig in EXIT_CODES:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        self.signal = signum
        signal.signal(signum, self._previous[signum])

    def __exit__(self, *_: Any) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

    def error(self, message: str) -> Interrupted:
        """An ``Interrupted`` whose exit code is that of the signal received (130 or 143)."""
        exc = Interrupted(message)
        exc.exit_code = EXIT_CODES.get(self.signal or signal.SIGINT, 130)
        return exc


def quiet_interrupt_at_exit() -> None:
    """From now on a Ctrl-C ends the process at once with 130, without a traceback.

    Called when a command has returned: a Ctrl-C while the interpreter shuts down (joining worker
    processes in multiprocessing's atexit handler, non-daemon threads) would otherwise print a
    ``KeyboardInterrupt`` traceback from inside that handler. Output is flushed first; worker
    processes end with their parent (``toolkit.data.workers``).
    """
    import os
    import sys

    def leave(_signum: int, _frame: Any) -> None:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError, AttributeError):
                pass
        os._exit(130)

    signal.signal(signal.SIGINT, leave)
