"""Fuzz of the pairs reader (``scoring.pairs.score_pairs``): random bytes, encodings and CSV shapes.

Whatever the file, the reader either raises a one-line ``ToolkitError`` or writes one output
row per input pair (a per-row ``error`` where a pair cannot be scored). The expected rows come
from Python's csv module on the independently decoded text, not from the reader's own passes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scoring.pairs import score_pairs
from toolkit.errors import ToolkitError

FUZZ = settings(max_examples=300, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
ENCODINGS = ("utf-8", "utf-8", "utf-8-sig", "latin-1", "cp1252", "utf-16")
CELL_TEXT = (st.text(alphabet=list("ab/.é ñ,\"\r\n\t~-\u2028\ufeff"), max_size=12)
             | st.sampled_from(["1", "0", "true", "", "x" * 300]))
HEADERS = st.sampled_from([["image_a", "image_b"], ["image_a", "image_b", "label"], [" image_b ", "image_a", "x"],
                           ["image_a"], ["score", "image_a", "image_b", "error"], []])


def fake_embed(paths: list[str]) -> tuple[np.ndarray, list[str], dict[str, str]]:
    """Unit vectors from a hash of the path; every third path (by hash) fails with a reason."""
    ok, rows, errors = [], [], {}
    for path in paths:
        digest = hashlib.sha256(path.encode("utf-8", "surrogatepass")).digest()
        if digest[0] % 3 == 0:
            errors[path] = "cannot decode\nthis image"
            continue
        vector = np.frombuffer(digest[:16], dtype=np.uint8).astype(np.float32) - 127.5
        rows.append(vector / np.linalg.norm(vector))
        ok.append(path)
    return np.array(rows, dtype=np.float32).reshape(len(ok), 16), ok, errors


def expected_pairs(data: bytes) -> int | None:
    """Data rows the reader must keep (non-blank rows after the header), or None if it must refuse the file."""
    if b"\x00" in data[:8192]:
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    try:
        records = list(csv.reader(io.StringIO(text, newline="")))
    except csv.Error:
        return None
    if not records:
        return None
    header = [c.strip() for c in records[0]]
    if "image_a" not in header or "image_b" not in header:
        return None
    return sum(1 for row in records[1:] if any(cell.strip() for cell in row))


def check_reader(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pairs, out = Path(tmp) / "pairs.csv", Path(tmp) / "out" / "scores.csv"
        pairs.write_bytes(data)
        want = expected_pairs(data)
        try:
            result = score_pairs(pairs, out, fake_embed, threshold=0.0)
        except ToolkitError as exc:
            message = str(exc)
            assert "\n" not in message and message.startswith(str(pairs)), message
            assert not out.exists()  # a refused file writes nothing
            return
        assert want is not None, f"accepted a file the csv module cannot read as UTF-8 pairs: {data[:80]!r}"
        assert result.rows_written == want
        with open(out, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == want
        for row in rows:  # a score or an error, never both, never neither
            assert (row["score"] == "") == (row["error"] != ""), row
        assert result.failed_rows == sum(1 for row in rows if row["error"])


@st.composite
def csv_files(draw: st.DrawFn) -> bytes:
    """A CSV table of random cells, written by the csv module and encoded in a random encoding."""
    header = draw(HEADERS)
    width = max(len(header), 1)
    rows = draw(st.lists(st.lists(CELL_TEXT, min_size=0, max_size=width + 1), max_size=10))
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, quoting=draw(st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL])))
    writer.writerow(header)
    writer.writerows(rows)
    text = buffer.getvalue()
    if draw(st.booleans()):  # line endings as a hand-edited file has them
        text = text.replace("\r\n", draw(st.sampled_from(["\n", "\r"])))
    return text.encode(draw(st.sampled_from(ENCODINGS)), errors="replace")


@FUZZ
@given(csv_files())
def test_random_csv_shapes_and_encodings(data: bytes) -> None:
    check_reader(data)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(data: bytes) -> None:
    check_reader(data)


@FUZZ
@given(st.binary(max_size=120), st.sampled_from([b"image_a,image_b\n", b"\xef\xbb\xbfimage_a,image_b,label\r\n"]))
def test_random_bytes_after_a_valid_header(data: bytes, header: bytes) -> None:
    check_reader(header + data)
