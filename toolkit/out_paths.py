"""Output paths checked before the work that fills them, so a bad ``--out`` costs nothing.

``toolkit score``, ``embed``, ``export`` and ``evaluate`` call these first: an existing folder
given as a file, an existing file given as a folder, or a folder that cannot be created or
written is a one-line ``ToolkitError`` naming the path (exit 2) before any model is loaded or
image embedded, instead of a ``PermissionError`` / ``IsADirectoryError`` traceback after the
work is done.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from toolkit.errors import ToolkitError


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _probe_writable(folder: Path, what: str) -> None:
    """Create and remove a file in ``folder``: the only test that sees read-only mounts, ACLs and quotas."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
    except OSError as exc:
        raise ToolkitError(f"{what} cannot write in folder {folder} ({_reason(exc)})") from None
    os.close(fd)
    os.unlink(probe)


def ensure_out_dir(path: str | Path, what: str = "--out") -> Path:
    """Create folder ``path`` if needed and check that files can be written in it.

    Raises:
        ToolkitError: ``path`` (or a parent) is a file, or the folder cannot be created or written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ToolkitError(f"{what} {path}: is a file; give a folder (new or existing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise ToolkitError(f"{what} {path}: a part of this path is a file, not a folder") from None
    except OSError as exc:
        raise ToolkitError(f"{what} {path}: cannot create this folder ({_reason(exc)})") from None
    _probe_writable(path, f"{what} {path}:")
    return path


def check_out_file(path: str | Path, what: str = "--out", example: str = "out.csv") -> Path:
    """Check that file ``path`` can be written; nothing is created (the writer makes missing folders).

    Raises:
        ToolkitError: ``path`` is a folder, a read-only file or not a regular file (a device such as
            /dev/full, a FIFO, a symbolic link: the atomic rename would replace it), a part of its folder path is a
            file, or the nearest existing folder above it cannot be written.
    """
    path = Path(path)
    if path.is_dir():
        raise ToolkitError(f"{what} {path}: is a folder; give a file name, e.g. {path / example}")
    if path.is_symlink() or (path.exists() and not path.is_file()):  # the atomic rename would replace it
        raise ToolkitError(f"{what} {path}: exists and is {_special_kind(path)}, not a regular file; "
                           "give a new file name (or remove it first)")
    if path.exists() and not os.access(path, os.W_OK):
        raise ToolkitError(f"{what} {path}: the file exists and is read-only")
    folder = path.absolute().parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ToolkitError(f"{what} {path}: {folder} is a file, not a folder")
    _probe_writable(folder, f"{what} {path}:")
    return path


def _special_kind(path: Path) -> str:
    """What a path that is not a regular file is, in words (for the one-line refusal)."""
    if path.is_symlink():
        return "a symbolic link"
    mode = path.stat().st_mode
    kinds = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((name for test, name in kinds if test(mode)), "a special file")


def write_error(path: Path, exc: OSError) -> ToolkitError:
    """The one-line error for an ``OSError`` raised while writing ``path`` (disk full, permissions)."""
    if exc.errno == errno.ENOSPC:
        return ToolkitError(f"{path}: no space left on the device; nothing was written under this name")
    return ToolkitError(f"{path}: cannot be written ({_reason(exc)}); nothing was written under this name")


@contextlib.contextmanager
def removed_if_failed(path: str | Path | None) -> Iterator[None]:
    """Remove the folders of ``path`` that this block created if it fails and they are still empty.

    A command that creates its ``--out`` folder up front (``ensure_out_dir``) and then fails leaves
    no empty folder behind; folders that existed before, or that hold anything, are kept.
    """
    if path is None:
        yield
        return
    new: list[Path] = []
    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        new.append(folder)  # deepest first
        folder = folder.parent
    try:
        yield
    except BaseException:
        for folder in new:
            try:
                folder.rmdir()  # only when empty
            except OSError:
                break
        raise
