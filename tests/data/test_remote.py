"""Remote reads against a local server that accepts connections and never answers: a timeout, then a per-row error."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from exporters.metadata import ModelInfo
from toolkit.data.preprocess import Preprocessing
from scoring.images import ImageFiles


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port on 127.0.0.1 that accepts every connection and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def _uris(port: int) -> list[str]:
    uris = [f"http://127.0.0.1:{port}/a.png"]
    try:
        import pyarrow.fs  # noqa: F401
    except ImportError:
        return uris
    return uris + [f"s3://bucket/a.png?endpoint_override=127.0.0.1:{port}&scheme=http",
                   f"gs://bucket/a.png?endpoint_override=127.0.0.1:{port}&scheme=http"]


# A timed-out read's thread is left running; pyarrow's S3/GCS clients then crash the process that
# holds them when it later forks (seen as a segfault of the whole test session). So each read runs in
# a child process of its own, which reports and leaves with os._exit.
CHILD = """
import os, sys, time
from toolkit.data.remote import read_uri  # noqa: E402
start = time.monotonic()
try:
    read_uri(sys.argv[1], timeout_s=1.0)
    print("no error")
except TimeoutError as exc:
    print(f"{type(exc).__name__}: {exc} after {time.monotonic() - start:.2f}")
sys.stdout.flush()
os._exit(0)
"""


def test_a_remote_read_that_never_answers_times_out(silent_server: int) -> None:
    import subprocess
    import sys

    from tests.helpers import REPO, cli_env

    env = cli_env() | {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"}  # no credential lookup
    for uri in _uris(silent_server):
        done = subprocess.run([sys.executable, "-c", CHILD, uri], capture_output=True, text=True, env=env,
                              cwd=REPO, timeout=60)
        line = done.stdout.strip()
        assert line.startswith("TimeoutError:") and "no answer in 1 s" in line, (uri, line, done.stderr[-500:])
        assert float(line.rsplit(" ", 1)[1]) < 3.0, (uri, line)


def test_a_hung_remote_image_is_that_rows_error(silent_server: int, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOOLKIT_REMOTE_TIMEOUT", "1")
    local = tmp_path / "ok.png"
    Image.fromarray(np.full((8, 8, 3), 100, dtype=np.uint8)).save(local)
    info = ModelInfo(Preprocessing(image_size=8, resize_size=8, channels=3, mean=(0.5,) * 3, std=(0.5,) * 3), embedding_dim=4)
    files = ImageFiles([f"http://127.0.0.1:{silent_server}/a.png", str(local)], info)
    start = time.monotonic()
    index, image, error = files[0]
    assert time.monotonic() - start < 3.0
    assert index == 0 and image is None and error.startswith("remote read timed out (no answer in 1 s")
    _, image, error = files[1]
    assert error == "" and image is not None and image.shape == (3, 8, 8) and (image == 100).all()
