"""Reading the pairs CSV of `toolkit score --pairs`: its header, and its rows as interned image ids, in blocks.

The reader's API, used by ``scoring.pairs`` (which scores and writes): ``read_pairs_header``,
``has_quotes``, ``read_ids`` (pass 1), ``open_rows`` (pass 2 reads the rows again) and
``no_cyclic_gc``. See ``scoring.pairs`` for why a file without quotes is read as plain
comma-split lines.
"""

from __future__ import annotations

import contextlib
import csv
import gc
from array import array
from collections.abc import Iterable, Iterator
from itertools import islice, repeat
from operator import itemgetter
from pathlib import Path
from typing import TextIO

from scoring.csv_out import BLOCK_ROWS
from toolkit.data.csv_files import open_csv
from toolkit.errors import ToolkitError

_LABELS = {"1": 1, "true": 1, "0": 0, "false": 0, "": -1}
# Every character that can start a blank line (a comma or any whitespace ``str.strip`` removes);
# a line starting with anything else is not blank. "" (an empty line) is "in" it too.
BLANK_START = ",\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"


class CellIds(dict):
    """Distinct cell -> id in first-seen order; ``ids[cell]`` assigns the next id to a new cell."""

    def __missing__(self, key: str) -> int:
        value = self[key] = len(self)
        return value


@contextlib.contextmanager
def no_cyclic_gc() -> Iterator[None]:
    """Pauses the cyclic garbage collector while millions of row lists are made and dropped.

    Rows hold only strings, so they form no reference cycles; with the collector on, its
    repeated scans of the growing young generations made the two CSV passes about 1.5-2x slower.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _check_header(path: Path, header: list[str] | None) -> list[str]:
    if header is None or not any(cell.strip() for cell in header):
        raise ToolkitError(f"{path}: the CSV is empty; expected a header image_a,image_b[,label] and one row per pair")
    header = [cell.strip() for cell in header]
    missing = [c for c in ("image_a", "image_b") if c not in header]
    if missing:
        raise ToolkitError(
            f"{path}: the header has columns {header}; expected image_a and image_b (optional label), "
            f"missing {', '.join(missing)}"
        )
    return header


def read_pairs_header(path: str | Path) -> list[str]:
    """The header of a pairs CSV, checked: to fail fast, before any model is loaded.

    Raises:
        ToolkitError: a folder, no such file, an empty file, or no image_a / image_b column.
    """
    path = Path(path)
    if path.is_dir():
        raise ToolkitError(f"{path}: is a folder; --pairs expects a CSV file with columns image_a,image_b[,label]")
    if not path.is_file():
        raise ToolkitError(f"{path}: no such file; expected a CSV with columns image_a,image_b[,label]")
    with open_csv(path) as f:
        return _check_header(path, next(csv.reader(f), None))


def has_quotes(path: Path) -> bool:
    """Whether the file holds any double quote: then both passes parse with the csv module (``open_rows``)."""
    with open(path, "rb") as f:
        return any(b'"' in chunk for chunk in iter(lambda: f.read(2**24), b""))


def open_rows(f: TextIO, quoted: bool, lines: bool = False) -> tuple[list[str] | None, Iterator[list]]:
    """The header row of ``f`` and its data rows in blocks (see ``_blocks``).

    With ``quoted`` the csv module parses; otherwise each line is a record and is split on
    commas, or with ``lines`` kept as its text (line ending removed).
    """
    if quoted:
        reader = csv.reader(f)
        return next(reader, None), _blocks(reader)
    first = f.readline()
    header = first.rstrip("\r\n").split(",") if first else None
    blocks = _line_blocks(f)
    return header, blocks if lines else (list(map(str.split, block, repeat(","))) for block in blocks)


def _blocks(reader: Iterable[list[str]]) -> Iterator[list[list[str]]]:
    """Data rows in non-empty blocks; blank rows (every cell empty or spaces) are not pairs and are dropped."""
    reader = iter(reader)
    while block := list(islice(reader, BLOCK_ROWS)):
        kept = [row for row in block if any(map(str.strip, row))]
        if kept:
            yield kept


def _column(block: list[list[str]], col: int) -> list[str]:
    """Stripped cells of column ``col``; a row too short for it gives ""."""
    try:
        return list(map(str.strip, map(itemgetter(col), block)))
    except IndexError:
        return [row[col].strip() if col < len(row) else "" for row in block]


def _line_of(path: Path, data_row: int) -> int:
    """The file line of the ``data_row``-th data row (0-based), for error messages."""
    with open_csv(path) as f:
        reader = csv.reader(f)
        next(reader)
        seen = -1
        for row in reader:
            seen += any(map(str.strip, row))
            if seen == data_row:
                return reader.line_num
    return -1


def read_ids(path: Path, quoted: bool) -> tuple[list[str], CellIds, array, array, array | None]:
    """Pass 1: the header, the distinct cells, per-row cell ids of image_a / image_b, and labels."""
    ids, ids_a, ids_b = CellIds(), array("q"), array("q")
    labels: array | None = None
    with open_csv(path) as f:
        first, blocks = open_rows(f, quoted)
        header = _check_header(path, first)
        col_a, col_b = header.index("image_a"), header.index("image_b")
        col_label = header.index("label") if "label" in header else None
        labels = array("b") if col_label is not None else None
        for block in blocks:
            ids_a.extend(map(ids.__getitem__, _column(block, col_a)))
            ids_b.extend(map(ids.__getitem__, _column(block, col_b)))
            if col_label is not None:
                raw = _column(block, col_label)
                values = list(map(_LABELS.get, map(str.lower, raw)))
                if None in values:
                    k = values.index(None)
                    line = _line_of(path, len(labels) + k)  # type: ignore[arg-type]
                    raise ToolkitError(f"{path}: line {line}: label {raw[k]!r} is not 1, 0, true, false or empty")
                labels.extend(values)  # type: ignore[union-attr]
    if not ids_a:
        raise ToolkitError(f"{path}: no pairs after the header {','.join(header)}")
    return header, ids, ids_a, ids_b, labels


def _line_blocks(f: TextIO) -> Iterator[list[str]]:
    """Non-blank lines (line ending removed) in blocks; blank = only commas and spaces, as in ``_blocks``."""
    while block := list(islice(f, BLOCK_ROWS)):
        lines = list(map(str.rstrip, block, repeat("\r\n")))
        # A line that starts with a cell character is not blank; only the rest need the full check.
        kept = [line for line in lines if line[:1] not in BLANK_START or line.replace(",", "").strip()]
        if kept:
            yield kept
