"""Fuzz of the CSV manifest reader (``toolkit.data.sources.read_manifest``) and the shared CSV opener.

Random bytes, random encodings and random CSV shapes: the reader either returns one image per
non-blank row (checked against Python's csv module on the independently decoded text) or
raises a one-line ``ToolkitError`` naming the file; never another exception.
"""

from __future__ import annotations

import csv
import io
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolkit.data.csv_files import first_non_utf8_line, open_csv
from toolkit.data.sources import read_manifest
from toolkit.errors import ToolkitError

FUZZ = settings(max_examples=300, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
IMAGES = ("a.png", "b.png", "sub/c.png")  # files that exist (their content is never read)
PATH_CELLS = st.sampled_from([*IMAGES, " a.png "]) | st.sampled_from(["missing.png", "", "~nosuchuser_zz/a.png",
                                                                     "x" * 300, "sub"])
OTHER_CELLS = st.text(alphabet=list("ab1 é,\"\r\n\u2028\ufeff"), max_size=6)
ENCODINGS = ("utf-8", "utf-8", "utf-8", "utf-8-sig", "latin-1", "utf-16")


def expected_images(data: bytes) -> int | None:
    """Images the manifest must give (one per non-blank row), or None when it must be refused."""
    if b"\x00" in data[:8192]:
        return None
    try:
        records = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    except (UnicodeDecodeError, csv.Error):
        return None
    if not records or "path" not in [c.strip() for c in records[0]]:
        return None
    header = [c.strip() for c in records[0]]
    rows = [dict(zip(header, (c.strip() for c in row))) for row in records[1:]]
    rows = [r for r in rows if any(r.values())]
    for row in rows:
        if row.get("path", "") not in IMAGES:  # the only files that exist
            return None
        if "label" in header and not row.get("label"):
            return None
    return len(rows) or None


def check_manifest(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name in IMAGES:
            (folder / name).parent.mkdir(exist_ok=True)
            (folder / name).write_bytes(b"not read")
        manifest = folder / "manifest.csv"
        manifest.write_bytes(data)
        want = expected_images(data)
        try:
            images = read_manifest(manifest)
        except ToolkitError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(str(manifest)), str(exc)
            assert want is None, f"refused a valid manifest ({exc}): {data[:80]!r}"
            return
        assert want is not None, f"accepted a manifest that should be refused: {data[:80]!r}"
        assert len(images.paths) == want
        assert all(Path(p).is_file() for p in images.paths)


@st.composite
def manifests(draw: st.DrawFn) -> bytes:
    header = draw(st.sampled_from([["path"], ["path", "label"], ["label", " path"], ["\ufeffpath", "label"], ["file"]]))
    rows = []
    for _ in range(draw(st.integers(0, 3))):
        cells = [draw(PATH_CELLS) if name.strip() == "path" else draw(OTHER_CELLS) for name in header]
        rows.append(cells[: draw(st.integers(0, len(cells) + 1))] + draw(st.lists(OTHER_CELLS, max_size=1)))
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows([header, *rows])
    text = buffer.getvalue()
    if draw(st.booleans()):
        text = text.replace("\r\n", "\n")
    return text.encode(draw(st.sampled_from(ENCODINGS)), errors="replace")


@FUZZ
@given(manifests())
def test_random_manifests(data: bytes) -> None:
    check_manifest(data)


@FUZZ
@given(st.binary(max_size=200), st.sampled_from([b"", b"path,label\n", b"\xef\xbb\xbfpath\r\n"]))
def test_random_bytes(data: bytes, header: bytes) -> None:
    check_manifest(header + data)


def test_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"x")
    manifest = tmp_path / "m.csv"
    manifest.write_bytes("\ufeffpath,label\na.png,cat\n".encode())
    images = read_manifest(manifest)
    assert images.class_names == ["cat"] and images.paths == [str(tmp_path / "a.png")]


def test_latin1_names_the_line(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_bytes("path,label\na.png,chat\nb.png,caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ToolkitError, match=r"m\.csv: line 3 is not UTF-8"):
        read_manifest(manifest)


@pytest.mark.parametrize(("data", "line"), [(b"ok\n\xe9\n", 2), (b"\xff", 1), (b"fine\n", 0), ("\u00e9\n".encode(), 0)])
def test_first_non_utf8_line_against_hand_counted_lines(tmp_path: Path, data: bytes, line: int) -> None:
    path = tmp_path / "f.csv"
    path.write_bytes(data)
    assert first_non_utf8_line(path) == line


def test_open_csv_refuses_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ToolkitError, match="is a folder"):
        with open_csv(tmp_path):
            pass
