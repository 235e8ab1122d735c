"""Ctrl-C while the interpreter shuts down (multiprocessing's atexit handler joining a child): exit 130, no traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.helpers import REPO, cli_env

SCRIPT = """
import multiprocessing, sys, time
child = multiprocessing.Process(target=time.sleep, args=(60,))  # non-daemon: joined at exit by multiprocessing
child.start()
print("child", child.pid, flush=True)
sys.argv = ["toolkit", "--help"]
import cli
cli.run()
"""


def test_ctrl_c_during_interpreter_exit_prints_no_traceback() -> None:
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=REPO, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline().split()[1])
    try:
        assert "Usage" in proc.stdout.readline() + proc.stdout.readline()  # the command ran and returned
        time.sleep(2.0)  # now in the atexit handler, waiting for the child
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)  # not communicate(): the child holds the pipes open until it is killed
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if proc.poll() is None:
            proc.kill()
    _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert proc.returncode == 130, err
