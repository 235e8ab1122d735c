"""Fuzz of the index folder's readers: ``store.json``, shard ``.json``, shard ``.npy`` headers, ``index.json``.

Whatever bytes a file holds, a reader either returns what a valid file would give (checked against
the values written) or raises a one-line ``ToolkitError`` naming the file; never another exception.
"""

from __future__ import annotations

import io
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scoring.index import job
from scoring.index.store import EmbeddingStore
from scoring.index.store_files import load_vectors
from toolkit.errors import ToolkitError

FUZZ = settings(max_examples=200, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=12)
T = TypeVar("T")
STORE_KEYS = {"format": st.just("toolkit-embedding-store") | JSON, "version": JSON, "fingerprint": st.text() | JSON,
              "model": st.text() | JSON, "source_model": st.text() | JSON, "preprocessing": st.just({}) | JSON,
              "dim": st.integers(-2, 8) | JSON, "shard_size": st.integers(-2, 8) | JSON}
SHARD_KEYS = {"paths": st.lists(st.sampled_from(["a", "b", "c"]), max_size=4) | JSON,
              "ok": st.lists(st.sampled_from(["a", "b", "c"]), max_size=4) | JSON,
              "errors": st.dictionaries(st.sampled_from(["a", "b"]), st.text(max_size=4)) | JSON}


def read_or_refuse(path: Path, content: bytes, read: Callable[[], T]) -> T | None:
    """Writes ``content`` to ``path`` and calls ``read``: its value, or None when it refused the file.

    A refusal must be one ``ToolkitError`` line naming ``path``; any other exception fails the test.
    """
    path.write_bytes(content)
    try:
        return read()
    except ToolkitError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
        return None


def as_bytes(value: object, mangle: bytes) -> bytes:
    text = json.dumps(value).encode("utf-8")
    return text if not mangle else text[: len(text) // 2] + mangle


@FUZZ
@given(data=st.fixed_dictionaries({}, optional=STORE_KEYS) | JSON, mangle=st.sampled_from([b"", b"\xff", b"}"]))
def test_store_json(data: object, mangle: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        manifest = read_or_refuse(Path(folder) / "store.json", as_bytes(data, mangle), EmbeddingStore(folder).manifest)
        if manifest is None:
            return
        assert not mangle and json.dumps(manifest) == json.dumps(data)
        assert isinstance(manifest["dim"], int) and manifest["dim"] >= 1 and isinstance(manifest["fingerprint"], str)


@FUZZ
@given(data=st.fixed_dictionaries({}, optional=SHARD_KEYS) | JSON, mangle=st.sampled_from([b"", b"\x00", b"]"]),
       name=st.sampled_from(["shard-00000.json", "shard-12345.json", "shard-x.json", "shard-000001.json"]))
def test_shard_json(data: object, mangle: bytes, name: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "shards").mkdir()
        shards = read_or_refuse(Path(folder) / "shards" / name, as_bytes(data, mangle), EmbeddingStore(folder).shards)
        if shards is None:
            return
        if name == "shard-x.json":
            assert shards == []  # not a shard's name: never read
            return
        assert not mangle and len(shards) == 1 and isinstance(data, dict)
        assert (shards[0].paths, shards[0].ok, shards[0].errors) == (data["paths"], data["ok"], data["errors"])
        assert set(shards[0].ok) <= set(shards[0].paths)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


GOOD = np.arange(12, dtype=np.float32).reshape(3, 4)


@FUZZ
@given(position=st.integers(0, 200), replacement=st.binary(min_size=0, max_size=12), cut=st.integers(-20, 0),
       array=st.sampled_from([GOOD, GOOD.astype(np.float64), GOOD.T, np.asfortranarray(GOOD), GOOD[:2],
                              np.array([{"x": 1}] * 3, dtype=object), GOOD.reshape(12)]))
def test_npy_header_and_size(position: int, replacement: bytes, cut: int, array: np.ndarray) -> None:
    raw = npy_bytes(array)
    raw = raw[:position] + replacement + raw[position + len(replacement):]
    raw = raw[: len(raw) + cut] if cut else raw
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "shard-00000.npy"
        vectors = read_or_refuse(path, raw, lambda: load_vectors(path, 3, 4, "repair"))
        if vectors is None:
            return
        assert vectors.dtype == np.float32 and vectors.shape == (3, 4) and np.isfinite(vectors).all()


@FUZZ
@given(data=st.fixed_dictionaries({"kind": st.sampled_from(["flat", "ivf", "x"]) | JSON,
                                   "params": st.just({"kind": "flat"}) | st.just({"bogus": 1}) | JSON,
                                   "vectors": st.integers(0, 5) | JSON, "dim": st.integers(1, 5) | JSON,
                                   "index_bytes": st.integers(0, 9) | JSON, "build_seconds": st.floats() | JSON,
                                   "recall": st.none() | JSON}) | JSON,
       mangle=st.sampled_from([b"", b"\xfe"]))
def test_index_json(data: object, mangle: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "index.faiss").write_bytes(b"")
        meta = read_or_refuse(Path(folder) / "index.json", as_bytes(data, mangle), lambda: job.read_meta(Path(folder)))
        if meta is None:
            return
        assert not mangle and json.dumps(meta) == json.dumps(data) and meta["kind"] in ("flat", "ivf")


@pytest.mark.parametrize("content", [b"", b"\x93NUMPY", b"\x93NUMPY\x03\x00" + b"x" * 100])
def test_short_npy_files(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "s.npy"
    path.write_bytes(content)
    with pytest.raises(ToolkitError, match="damaged"):
        load_vectors(path, 3, 4, "repair")
