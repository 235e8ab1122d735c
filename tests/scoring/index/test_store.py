"""The sharded embedding store with a fake embedder (the plug-in point of other engines): each image once,
per-image errors kept, shards cut the same way however the work is split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from scoring.index.store import EmbeddingStore, embed_into_shards
from toolkit.errors import ToolkitError

FINGERPRINT = {"fingerprint": "abc", "model": "onnx:abc", "preprocessing": {"embedding_dim": 4}}


class FakeEmbedder:
    """Vector of path ``pN.png`` = (N, 1, 0, 0); paths containing ``bad`` fail. Records every call."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, paths: list[str]) -> tuple[np.ndarray, list[str], dict[str, str]]:
        self.calls.append(list(paths))
        ok = [p for p in paths if "bad" not in p]
        vectors = np.array([[float(p[1:-4]), 1.0, 0.0, 0.0] for p in ok], dtype=np.float32).reshape(len(ok), 4)
        return vectors, ok, {p: "unreadable image (test)" for p in paths if "bad" in p}


def make_store(folder: Path, shard_size: int = 3) -> EmbeddingStore:
    store = EmbeddingStore(folder)
    store.create(FINGERPRINT, shard_size, "model.onnx")
    return store


def test_each_image_is_embedded_once_and_errors_are_kept(tmp_path: Path) -> None:
    store, embed = make_store(tmp_path), FakeEmbedder()
    paths = ["p1.png", "p2.png", "bad3.png", "p1.png", "p4.png", "p5.png"]
    embed_into_shards(store, paths, embed)
    embed_into_shards(store, ["p4.png", "p6.png", "p1.png"], embed)  # an add: only p6 is new
    seen = [p for call in embed.calls for p in call]
    assert sorted(seen) == sorted(set(seen)) == ["bad3.png", "p1.png", "p2.png", "p4.png", "p5.png", "p6.png"]
    assert store.ok_paths() == ["p1.png", "p2.png", "p4.png", "p5.png", "p6.png"]
    assert [s.errors for s in store.shards()][0] == {"bad3.png": "unreadable image (test)"}
    vectors = store.vectors()
    expected = np.array([[n, 1, 0, 0] for n in (1, 2, 4, 5, 6)], dtype=np.float64)
    np.testing.assert_allclose(vectors, expected / np.linalg.norm(expected, axis=1, keepdims=True), rtol=1e-6)


def test_a_split_run_cuts_the_same_shards(tmp_path: Path) -> None:
    paths = [f"p{i}.png" for i in range(10)]
    whole = make_store(tmp_path / "whole")
    embed_into_shards(whole, paths, FakeEmbedder())
    split = make_store(tmp_path / "split")
    number, first = split.pending_shards(paths)[0]
    vectors, ok, errors = FakeEmbedder()(first)
    split.write_shard(number, first, vectors, ok, errors)  # e.g. written by a remote worker
    embed_into_shards(split, paths, FakeEmbedder())
    assert [s.paths for s in whole.shards()] == [s.paths for s in split.shards()] == [
        paths[0:3], paths[3:6], paths[6:9], paths[9:]]
    np.testing.assert_array_equal(whole.vectors(), split.vectors())


def test_a_store_of_another_model_is_refused(tmp_path: Path) -> None:
    make_store(tmp_path)
    with pytest.raises(ToolkitError, match="fingerprint"):
        EmbeddingStore(tmp_path).create({**FINGERPRINT, "fingerprint": "def", "model": "onnx:def"}, 3, "other.onnx")
