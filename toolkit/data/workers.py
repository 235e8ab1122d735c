"""Set-up of DataLoader worker processes (training loaders and the scoring decoders).

Workers share the main process's process group, so a signal sent to the group (``timeout -s TERM``,
SLURM's ``scancel``, a container stop, Ctrl-C in a terminal) reaches them too. They ignore SIGINT
and SIGTERM: the main process decides (the training loop saves mid-epoch and exits 130/143) and
then shuts its workers down. A worker must not outlive its parent either (``kill -9`` of the main
process): on Linux the kernel sends it SIGKILL when the parent dies (``PR_SET_PDEATHSIG``); elsewhere
a watchdog thread exits once the parent pid changes. Because they ignore SIGTERM, multiprocessing's
own exit hook (SIGTERM, then join) cannot end a worker whose loader is still referenced when the
interpreter exits; ``worker_init_fn`` therefore registers a hook that kills leftover worker processes
first (``kill_leftover_workers``).
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when ``parent_pid`` exits (Linux), else poll the parent pid every second."""
    armed = False
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            armed = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
        except (OSError, AttributeError):
            armed = False
    if os.getppid() != parent_pid:  # the parent died before the death signal was armed
        os._exit(1)
    if armed:
        return

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def init_worker(parent_pid: int, single_thread: bool, _worker_id: int) -> None:
    """``worker_init_fn``: ignore SIGINT/SIGTERM, die with ``parent_pid``, optionally one torch thread."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent(parent_pid)
    if single_thread:
        import torch

        torch.set_num_threads(1)


def kill_leftover_workers() -> None:
    """SIGKILL the daemonic child processes still alive at exit (DataLoader workers: they ignore SIGTERM).

    Runs before multiprocessing's exit hook (``atexit`` calls hooks last-registered first, and this
    one is registered after ``multiprocessing.util`` is imported), which would otherwise send them
    SIGTERM and wait for them forever.
    """
    for child in multiprocessing.active_children():
        if child.daemon:
            child.kill()
            child.join(timeout=5)


_exit_hook_registered = False


def worker_init_fn(single_thread: bool = False) -> Callable[[int], None]:
    """A picklable ``worker_init_fn`` bound to this (the parent) process's pid.

    Also registers ``kill_leftover_workers`` at exit (once per process).
    """
    global _exit_hook_registered
    if not _exit_hook_registered:
        import multiprocessing.util  # noqa: F401  (its exit hook must be registered before ours)

        atexit.register(kill_leftover_workers)
        _exit_hook_registered = True
    return functools.partial(init_worker, os.getpid(), single_thread)
