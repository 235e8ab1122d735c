"""Reading one remote object (``s3://``, ``gs://``, ``hdfs://``, ``file://``, ``http(s)://``) with a deadline.

A remote read must never hang a job: without network, GCS's client waits for minutes before
failing. Every read runs in a daemon thread and is given up after ``timeout_s`` seconds (default
``REMOTE_TIMEOUT_S``, overridable with the ``TOOLKIT_REMOTE_TIMEOUT`` environment variable); the
caller turns the ``TimeoutError`` into that row's error and goes on with the others. HTTP(S) is
read with urllib (its socket timeout too), everything else through pyarrow's filesystems.
"""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request
from typing import Any

from toolkit.errors import ToolkitError

REMOTE_TIMEOUT_S = 30.0


def remote_timeout() -> float:
    """Seconds a remote read may take: ``TOOLKIT_REMOTE_TIMEOUT`` when set to a positive number, else 30."""
    text = os.environ.get("TOOLKIT_REMOTE_TIMEOUT", "")
    try:
        value = float(text)
    except ValueError:
        return REMOTE_TIMEOUT_S
    return value if 0 < value < float("inf") else REMOTE_TIMEOUT_S


def _read_http(url: str, timeout_s: float) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 - the user's own URL
            return response.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise FileNotFoundError(url) from None
        raise


def _read_pyarrow(uri: str) -> bytes:
    try:
        from pyarrow import fs
    except ImportError:
        raise ToolkitError(f"{uri}: reading URIs needs pyarrow (pip install pyarrow, or the ray extra)") from None
    filesystem, path = fs.FileSystem.from_uri(uri)
    if filesystem.get_file_info(path).type == fs.FileType.NotFound:
        raise FileNotFoundError(uri)
    with filesystem.open_input_file(path) as f:
        return f.read()


def read_uri(uri: str, timeout_s: float | None = None) -> bytes:
    """The bytes of ``uri``, or an exception within ``timeout_s`` seconds.

    Raises:
        TimeoutError: no complete answer in time. FileNotFoundError: no such object.
        ToolkitError: pyarrow is needed and not installed. Anything the filesystem raises.
    """
    timeout = remote_timeout() if timeout_s is None else timeout_s
    scheme = uri.partition("://")[0].lower()
    outcome: list[tuple[bool, Any]] = []

    def fetch() -> None:
        try:
            data = _read_http(uri, timeout) if scheme in ("http", "https") else _read_pyarrow(uri)
            outcome.append((True, data))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
            outcome.append((False, exc))

    thread = threading.Thread(target=fetch, name="remote-read", daemon=True)  # daemon: a hung read never blocks exit
    thread.start()
    thread.join(timeout)
    if not outcome:
        raise TimeoutError(f"no answer in {timeout:g} s (TOOLKIT_REMOTE_TIMEOUT sets the limit)")
    ok, value = outcome[0]
    if not ok:
        if isinstance(value, OSError) and "timed out" in str(value).lower():
            raise TimeoutError(f"no answer in {timeout:g} s (TOOLKIT_REMOTE_TIMEOUT sets the limit)") from None
        raise value
    return value
