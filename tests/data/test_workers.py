"""DataLoader workers ignore SIGTERM (the main process decides), yet a process still exits when one is left."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.helpers import REPO

# A loader with persistent workers that is still referenced (a module global) when the interpreter
# exits: multiprocessing's exit hook sends its workers SIGTERM, which they ignore, and joins them.
LEFTOVER_LOADER = textwrap.dedent("""
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from toolkit.data.workers import worker_init_fn

    LOADER = DataLoader(TensorDataset(torch.arange(64.0)), batch_size=8, num_workers=1,
                        persistent_workers=True, worker_init_fn=worker_init_fn())
    for _ in zip(range(2), LOADER):  # an iteration left unfinished
        pass
    print("done", flush=True)
""")


def test_a_process_with_a_leftover_worker_exits() -> None:
    done = subprocess.run([sys.executable, "-c", LEFTOVER_LOADER], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "done" and done.returncode == 0, done.stderr[-2000:]


def test_workers_ignore_sigterm() -> None:
    script = textwrap.dedent("""
        import os, signal, sys, time
        from toolkit.data.workers import init_worker
        init_worker(os.getppid(), False, 0)
        os.kill(os.getpid(), signal.SIGTERM)  # ignored
        print("alive", flush=True)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "alive", done.stderr[-2000:]
