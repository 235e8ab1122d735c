"""CSV output of `toolkit score`: written whole or not at all, in blocks of rows for speed."""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import TextIO

from toolkit.io import atomic_write
from toolkit.out_paths import write_error

BLOCK_ROWS = 65_536  # rows handed to csv.writer.writerows at once: C-speed writing, bounded memory


def in_blocks(rows: Iterable[Sequence[object]], size: int = BLOCK_ROWS) -> Iterator[list[Sequence[object]]]:
    """Groups a row iterator into lists of at most ``size`` rows."""
    iterator = iter(rows)
    while block := list(islice(iterator, size)):
        yield block


def write_atomic(path: Path, fill: Callable[[TextIO], int]) -> int:
    """Runs ``fill`` on a temporary text file beside ``path``, then renames it over ``path``.

    A crash or Ctrl-C therefore never leaves a half-written file under the final name, and an
    older file of that name stays until the new one is complete. An ``OSError`` (read-only
    folder, disk full, a folder of that name) becomes a one-line ``ToolkitError``.

    Returns:
        What ``fill`` returned (the number of data rows).
    """
    try:
        with atomic_write(path, "w", newline="") as f:
            return fill(f)
    except OSError as exc:  # disk full, the folder removed or made read-only meanwhile
        raise write_error(path, exc) from None


def write_csv_atomic(path: Path, header: Sequence[str], blocks: Iterable[Sequence[Sequence[object]]]) -> int:
    """Writes ``header`` and blocks of rows as one CSV, atomically (``write_atomic``).

    Returns:
        The number of data rows written.
    """

    def fill(f: TextIO) -> int:
        writer = csv.writer(f)
        writer.writerow(header)
        count = 0
        for block in blocks:
            writer.writerows(block)
            count += len(block)
        return count

    return write_atomic(path, fill)


def one_line(reason: str) -> str:
    """``reason`` with every run of whitespace (newlines included) made one space."""
    return " ".join(str(reason).split())
