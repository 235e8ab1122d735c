"""Damaged index folders (issue 17, bug 4): each damaged file is one line naming it and its repair, exit 2.

An index of the 18 test images is built once; each test damages a copy of it the way a full disk,
a cut-short copy or another program would, runs the commands that read it, and checks the one
line. Where the line names a repair, the test follows it and checks that the folder works again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.scoring.index.test_index_cli import FAST, read_rows
from tests.scoring.test_bad_input import one_error
from tests.test_cli import invoke


@pytest.fixture(scope="module")
def built(onnx_model: Path, images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A flat index of the 18 images in 4 shards of 5."""
    folder = tmp_path_factory.mktemp("built") / "index"
    res = rebuild(onnx_model, images, folder)
    assert res.exit_code == 0, res.output
    return folder


@pytest.fixture
def index(built: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "index"
    shutil.copytree(built, copy)
    return copy


def search(model: Path, images: Path, index: Path, out: Path):  # noqa: ANN201 - click's Result
    return invoke("score", str(model), "--query", str(images / "c0"), "--index", str(index), "--out", str(out), *FAST)


def add(index: Path, images: Path):  # noqa: ANN201
    return invoke("index", "add", str(index), str(images), *FAST)


def rebuild(model: Path, images: Path, index: Path):  # noqa: ANN201
    """The build that made ``built`` (18 images, shards of 5), run again on ``index``: the repair lines name it."""
    return invoke("index", "build", str(model), str(images), "--out", str(index), "--shard-size", "5", *FAST)


def every_reader_refuses(model: Path, images: Path, index: Path, out: Path) -> list[str]:
    """The one error line of each command that reads the folder (score --index, index add, index info)."""
    return [one_error(result) for result in (search(model, images, index, out), add(index, images),
                                             invoke("index", "info", str(index)))]


@pytest.mark.parametrize("content", [b"\xff\xfe\x00binary{", b'{"format": "toolkit-embedding-store"}'])
def test_a_damaged_store_json(onnx_model: Path, images: Path, index: Path, tmp_path: Path, content: bytes) -> None:
    (index / "store.json").write_bytes(content)
    for line in every_reader_refuses(onnx_model, images, index, tmp_path / "m.csv"):
        assert str(index / "store.json") in line and "damaged" in line and "toolkit index build" in line
    assert not (tmp_path / "m.csv").exists()


@pytest.mark.parametrize("content", [b"{", b'{"paths": [1], "ok": [], "errors": {}}', b'{"paths": ["a"], "ok": ["b"], "errors": {}}'])
def test_a_damaged_shard_json_names_the_shard_to_remove(onnx_model: Path, images: Path, index: Path, tmp_path: Path,
                                                        content: bytes) -> None:
    shard = index / "shards" / "shard-00001.json"
    shard.write_bytes(content)
    for line in every_reader_refuses(onnx_model, images, index, tmp_path / "m.csv"):
        assert line.startswith(f"error: {shard}: damaged") and f"remove {shard} and {shard.with_suffix('.npy')}" in line


@pytest.mark.parametrize("damage", ["truncated", "deleted", "object array", "wrong shape", "not npy", "NaN"])
def test_damaged_shard_vectors_are_noticed_by_add_and_build(onnx_model: Path, images: Path, index: Path,
                                                            damage: str) -> None:
    npy = index / "shards" / "shard-00002.npy"
    good = np.load(npy)
    if damage == "truncated":
        npy.write_bytes(npy.read_bytes()[:-7])
    elif damage == "deleted":
        npy.unlink()
    elif damage == "object array":
        np.save(npy, np.array([{"a": 1}] * len(good), dtype=object), allow_pickle=True)
    elif damage == "wrong shape":
        np.save(npy, good[:-1])
    elif damage == "not npy":
        npy.write_bytes(b"\x93NUMPY\x01\x00garbage")
    else:
        bad = good.copy()
        bad[0, 0] = np.nan
        np.save(npy, bad)
    if damage != "NaN":  # add checks every shard's header and size (not its values) before adding anything
        line = one_error(add(index, images / "c0"))
        assert str(npy) in line and f"remove {npy.with_suffix('.json')} and {npy}" in line
    line = one_error(rebuild(onnx_model, images, index))
    assert str(npy) in line

    # The repair the line names: remove the shard; the same build embeds its images again.
    npy.with_suffix(".json").unlink()
    npy.unlink(missing_ok=True)
    res = rebuild(onnx_model, images, index)
    assert res.exit_code == 0, res.output
    assert "18 vectors" in invoke("index", "info", str(index)).output


@pytest.mark.parametrize("content", [b"{", b'{"kind": "lsh"}'])
def test_a_damaged_index_json(onnx_model: Path, images: Path, index: Path, tmp_path: Path, content: bytes) -> None:
    (index / "index.json").write_bytes(content)
    for line in every_reader_refuses(onnx_model, images, index, tmp_path / "m.csv"):
        assert str(index / "index.json") in line and "run toolkit index build again" in line
    res = rebuild(onnx_model, images, index)
    assert res.exit_code == 0, res.output  # the repair: the same build, from the store
    assert search(onnx_model, images, index, tmp_path / "m.csv").exit_code == 0


@pytest.mark.parametrize("cut", [10, -9])
def test_a_damaged_index_faiss(onnx_model: Path, images: Path, index: Path, tmp_path: Path, cut: int) -> None:
    path = index / "index.faiss"
    data = path.read_bytes()
    path.write_bytes(data[:cut])
    for result in (search(onnx_model, images, index, tmp_path / "m.csv"), add(index, images / "c0")):
        line = one_error(result)
        assert line.startswith(f"error: {path}: damaged") and "toolkit index build" in line
    res = rebuild(onnx_model, images, index)
    assert res.exit_code == 0, res.output
    assert search(onnx_model, images, index, tmp_path / "m.csv").exit_code == 0
    assert len(read_rows(tmp_path / "m.csv")) == 6 * 5


def test_an_index_of_another_size_than_its_store(onnx_model: Path, images: Path, index: Path, built: Path,
                                                 tmp_path: Path) -> None:
    other = tmp_path / "other"
    assert invoke("index", "build", str(onnx_model), str(images / "c1"), "--out", str(other), *FAST).exit_code == 0
    shutil.copy(other / "index.faiss", index / "index.faiss")  # 6 vectors where the store holds 18
    line = one_error(add(index, images / "c0"))
    assert str(index / "index.faiss") in line and "6 vectors" in line and "18" in line


def test_build_onto_a_file_and_add_to_a_file(onnx_model: Path, images: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("mine")
    line = one_error(invoke("index", "build", str(onnx_model), str(images), "--out", str(blocker), *FAST))
    assert str(blocker) in line and "is a file" in line
    line = one_error(add(blocker, images))
    assert str(blocker) in line and "not an index folder" in line
    assert blocker.read_text() == "mine"


def test_manifest_json_keeps_its_format(built: Path) -> None:
    """The store format this file's damage cases start from (guards the test against a silent format change)."""
    data = json.loads((built / "store.json").read_text())
    assert {"fingerprint", "model", "preprocessing", "dim", "shard_size", "source_model"} <= set(data)
