"""A decoding worker never outlives its command: ``kill -9`` of ``embed`` or ``index build`` ends it too."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import cli_env, toolkit_cmd
from tests.tiny_models import make_checkpoint


def _children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry))
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="module")
def many_images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("many")
    rng = np.random.default_rng(0)
    for i in range(3000):
        Image.fromarray(rng.integers(0, 255, size=(16, 16, 3), dtype=np.uint8)).save(folder / f"{i:05d}.png")
    return folder


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
@pytest.mark.parametrize("command", ["embed", "index"])
def test_kill9_of_the_command_ends_its_decoding_worker(tmp_path: Path, many_images: Path, command: str) -> None:
    run = make_checkpoint(tmp_path / "run", kind="finetune")
    args = (["embed", str(run), str(many_images), "--out", str(tmp_path / "e.npz")] if command == "embed" else
            ["index", "build", str(run), str(many_images), "--out", str(tmp_path / "index")])
    # large batches: the decoded batches waiting for the main process fill the pipe between them
    proc = subprocess.Popen(toolkit_cmd(*args, "--workers", "1", "--batch-size", "256", "--backend", "torch"),
                            env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    workers: list[int] = []
    deadline = time.time() + 400  # a loaded machine can take minutes to import torch
    while not workers and time.time() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        workers = _children(proc.pid)
        time.sleep(0.05)
    assert workers, "no decoding worker started"
    time.sleep(1.0)  # let it decode ahead
    proc.kill()
    proc.wait()
    deadline = time.time() + 15
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.1)
    left = [w for w in workers if _alive(w)]
    for w in left:
        os.kill(w, signal.SIGKILL)
    assert not left, f"decoding worker(s) {left} still running 15 s after their parent was killed"
