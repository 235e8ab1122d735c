"""The one way the toolkit opens a CSV or text list for reading: UTF-8, BOM or not, errors in one line.

Every reader of user files (pretrain/finetune manifests, ``embed`` lists, ``score --pairs``)
opens them with ``open_csv``: a UTF-8 byte-order mark (what Excel writes) is dropped, and a
file that is not UTF-8 text (Latin-1, UTF-16, a binary file), a malformed CSV or an
unreadable path becomes a ``ToolkitError`` naming the file and, where it can, the line.
"""

from __future__ import annotations

import contextlib
import csv
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from toolkit.errors import ToolkitError

ENCODING = "utf-8-sig"  # UTF-8; a leading byte-order mark is skipped
_SNIFF_BYTES = 8192
_SAVE_AS = "save it as UTF-8 (CSV UTF-8 in spreadsheet programs)"


def first_non_utf8_line(path: Path) -> int:
    """1-based number of the first line (split on ``\\n``) that is not valid UTF-8; 0 if none.

    Splitting the bytes on ``\\n`` is exact: in UTF-8 no multi-byte character contains that byte.
    """
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


def _check_text(path: Path) -> None:
    """Reject a file whose start holds NUL bytes (binary, or UTF-16/32) before any parsing."""
    with open(path, "rb") as f:
        head = f.read(_SNIFF_BYTES)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise ToolkitError(f"{path}: the file is UTF-16 text, not UTF-8; {_SAVE_AS}")
    if b"\x00" in head:
        raise ToolkitError(f"{path}: binary data (NUL bytes), not a UTF-8 CSV or text list")


@contextlib.contextmanager
def open_csv(path: str | Path) -> Iterator[TextIO]:
    """Open ``path`` as UTF-8 text for ``csv.reader`` (``newline=""``), BOM accepted.

    A ``UnicodeDecodeError`` or ``csv.Error`` raised while the body reads the file becomes a
    ``ToolkitError`` naming the file and line.

    Raises:
        ToolkitError: a missing, unreadable or binary file, non-UTF-8 text, a malformed CSV.
    """
    path = Path(path)
    try:
        _check_text(path)
        handle = open(path, newline="", encoding=ENCODING)
    except IsADirectoryError:
        raise ToolkitError(f"{path}: is a folder, not a CSV or text file") from None
    except FileNotFoundError:
        raise ToolkitError(f"{path}: no such file") from None
    except OSError as exc:
        raise ToolkitError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    with handle:
        try:
            yield handle
        except UnicodeDecodeError:
            line = first_non_utf8_line(path)
            where = f"line {line}" if line else "the file"
            raise ToolkitError(f"{path}: {where} is not UTF-8 text (Latin-1 or another encoding?); {_SAVE_AS}") from None
        except csv.Error as exc:
            raise ToolkitError(f"{path}: not a readable CSV ({exc})") from None


def resolve_entry(entry: str, base: Path) -> Path:
    """A path cell of a list or manifest: ``~`` expanded where it can be, relative to ``base``.

    ``~user`` of an unknown user stays as written (``Path.expanduser`` would raise).
    """
    path = Path(os.path.expanduser(entry))  # leaves an unknown ~user unchanged instead of raising
    return path if path.is_absolute() else base / path


def is_file(path: Path) -> bool:
    """``Path.is_file`` that says False for names the OS rejects (too long, NUL bytes) instead of raising."""
    try:
        return path.is_file()
    except (OSError, ValueError):
        return False
