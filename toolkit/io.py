"""Atomic file writes, the one way the toolkit writes a file (the bottom layer: any package may import it).

``atomic_path`` yields a temporary file beside the target (``.NAME.tmp-<pid>``); when the block
ends without error the file is fsynced and renamed over the target with ``os.replace``, so a crash
(even kill -9) leaves the old file or the new one, never a torn one. ``remove_stale_temps`` deletes
the temporary files of a dead process (``RunFolder.lock`` calls it for a run folder).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from toolkit.errors import ToolkitError

_TEMP = re.compile(r"^\..+\.tmp-(\d+)$")


def temp_path(path: Path) -> Path:
    """The temporary name of ``path`` while this process writes it: ``.NAME.tmp-<pid>`` beside it."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; when the block ends without error, fsync it and rename it over ``path``.

    For writers that take a file name (``onnx.save_model``, ``quantize_static``, ``np.savez``...).
    On an error the temporary file is removed and an older ``path`` stays as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ToolkitError(f"{path.parent}: cannot create the folder ({exc.strerror or type(exc).__name__})") from None
    tmp = temp_path(path)
    try:
        yield tmp
        if tmp.exists():  # else the block chose not to write (or moved the file elsewhere)
            commit(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def commit(tmp: Path, path: Path) -> None:
    """fsync the finished file ``tmp``, give it the usual permissions and rename it over ``path`` (same folder)."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp-like writers create 0600; give the usual permissions
    os.replace(tmp, path)


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """``open(path, mode)`` written atomically (see ``atomic_path``); text mode defaults to UTF-8."""
    if "b" not in mode:
        open_kwargs.setdefault("encoding", "utf-8")
    with atomic_path(path) as tmp, open(tmp, mode, **open_kwargs) as handle:
        yield handle


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_write(path) as handle:
        handle.write(text)


def write_bytes_atomic(path: str | Path, data: bytes | memoryview) -> None:
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def write_json_atomic(path: str | Path, payload: Any) -> None:
    """JSON, indented, written atomically: a reader never sees a half-written file."""
    write_text_atomic(path, json.dumps(payload, indent=2) + "\n")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder: Path) -> list[Path]:
    """Remove ``.NAME.tmp-<pid>`` files of processes that no longer run (left by kill -9)."""
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        match = _TEMP.match(path.name)
        if match and int(match.group(1)) != os.getpid() and not _pid_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
