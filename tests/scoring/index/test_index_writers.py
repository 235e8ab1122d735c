"""Who may write an index folder, and under which names its images are stored (issue 17, bugs 5 and 6).

* Two ``index add`` at once on one folder: the second is refused with one line while the first holds
  the run folders' lock (real processes: the lock is an OS lock), and the folder stays consistent.
* The same images by relative and absolute path are one image; the store records resolved paths, so
  a search from another working folder still opens every gallery image (the report's thumbnails).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from scoring.index.store import EmbeddingStore
from tests.helpers import REPO, cli_env, toolkit_cmd
from tests.scoring.index.test_index_cli import FAST, read_rows
from tests.test_cli import invoke

# Process A: `toolkit index add`, paused inside its first shard write until the test says go.
PAUSED_ADD = """
import sys, time
from pathlib import Path
from scoring.index import store
started, go = Path(sys.argv[1]), Path(sys.argv[2])
original = store.EmbeddingStore.write_shard
def paused(self, *args, **kwargs):
    started.write_text("in write_shard")
    deadline = time.monotonic() + 180
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return original(self, *args, **kwargs)
store.EmbeddingStore.write_shard = paused
from cli import app
sys.argv = ["toolkit", "index", "add", *sys.argv[3:]]
app()
"""


@pytest.mark.timeout(900)  # two interpreter start-ups; minutes on a loaded 2-core machine
def test_a_second_add_while_one_writes_is_one_line_and_the_folder_stays_whole(onnx_model: Path, images: Path,
                                                                             tmp_path: Path) -> None:
    import faiss

    index = tmp_path / "index"
    assert invoke("index", "build", str(onnx_model), str(images / "c0"), "--out", str(index), *FAST).exit_code == 0
    started, go = tmp_path / "started", tmp_path / "go"
    first = subprocess.Popen([sys.executable, "-c", PAUSED_ADD, str(started), str(go), str(index), str(images / "c1"),
                              *FAST], cwd=REPO, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 600
        while not started.exists():
            assert first.poll() is None, first.communicate()
            assert time.monotonic() < deadline, "the first index add never reached its shard write"
            time.sleep(0.1)
        second = subprocess.run(toolkit_cmd("index", "add", str(index), str(images / "c2"), *FAST), cwd=REPO,
                                env=cli_env(), capture_output=True, text=True, timeout=600)
    finally:
        go.write_text("go")
        out, err = first.communicate(timeout=600)
    assert second.returncode == 2, second.stderr
    assert second.stderr.strip().splitlines() == [
        f"error: {index} is being written by another toolkit process (pid {first.pid}); "
        "wait for it to finish or choose another --out"]
    assert first.returncode == 0, err
    store = EmbeddingStore(index)
    assert len(store.ok_paths()) == faiss.read_index(str(index / "index.faiss")).ntotal == 12
    again = invoke("index", "add", str(index), str(images / "c2"), *FAST)  # once the first is done, the second works
    assert again.exit_code == 0, again.output
    assert len(EmbeddingStore(index).ok_paths()) == faiss.read_index(str(index / "index.faiss")).ntotal == 18


def invoke_in(folder: Path, *args: str):  # noqa: ANN201 - click's Result
    """The CLI in this process, run from ``folder`` (relative arguments resolve there)."""
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        return CliRunner().invoke(app, list(args))
    finally:
        os.chdir(cwd)


def test_relative_and_absolute_paths_are_one_image_and_found_from_any_folder(onnx_model: Path, images: Path,
                                                                            tmp_path: Path) -> None:
    index = tmp_path / "index"
    built = invoke_in(images.parent, "index", "build", str(onnx_model), images.name, "--out", str(index), *FAST)
    assert built.exit_code == 0, built.output
    added = invoke_in(tmp_path, "index", "add", str(index), str(images), *FAST)  # the same 18 images, absolute
    assert added.exit_code == 0, added.output
    assert "added 0 vectors (18 already in the store)" in added.output
    stored = EmbeddingStore(index).ok_paths()
    assert len(stored) == 18 and all(os.path.isabs(p) and Path(p).is_file() for p in stored)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = invoke_in(elsewhere, "score", str(onnx_model), "--query", str(images / "c1"), "--index", str(index),
                    "--top-k", "3", "--out", "m.csv", "--html", "r.html", *FAST)
    assert res.exit_code == 0, res.output
    rows = read_rows(elsewhere / "m.csv")
    assert len(rows) == 6 * 3 and all(Path(r["gallery"]).is_file() for r in rows)
    assert len({(r["query"], r["gallery"]) for r in rows}) == len(rows)  # no image at two ranks of one query
    page = (elsewhere / "r.html").read_text()
    assert page.count("data:image/") >= 6 + 18  # every query and every match has its thumbnail
