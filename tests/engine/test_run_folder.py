"""A run folder under misuse: two writers, a file as --out, another run's files, stale temp files, resume mistakes.

Every case runs the real CLI in a subprocess and asserts its exit code, a single stderr line
and no traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import cli_env, run_cli, toolkit_cmd, write_tiny_recipe
from toolkit.engine.checkpoint import Checkpoint
from toolkit.engine.run_folder import RunFolder
from toolkit.io import atomic_path, remove_stale_temps


def snapshot(folder: Path) -> dict[str, str]:
    """Every file of ``folder`` with the hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 1-epoch tiny pretrain run (copy it before changing it)."""
    folder = tmp_path_factory.mktemp("finished")
    result = run_cli("pretrain", str(write_tiny_recipe(folder)), "--out", str(folder / "run"), "--epochs", "1")
    assert result.returncode == 0, result.stderr
    return folder / "run"


def copy_of(run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(run, tmp_path / "run"))


def test_a_second_writer_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    recipe = write_tiny_recipe(tmp_path)
    out = tmp_path / "same"
    first = subprocess.Popen(toolkit_cmd("pretrain", str(recipe), "--out", str(out), "--epochs", "2"), env=cli_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while not (out / "checkpoint.pt").exists():  # the first run holds the lock and has written files
            assert first.poll() is None and time.time() < deadline, first.communicate()
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)  # frozen: its files cannot change while the second one tries
        before = snapshot(out)
        second = run_cli("pretrain", str(recipe), "--out", str(out), "--epochs", "2", "--set", "train.seed=7")
        line = one_error_line(second)
        assert f"pid {first.pid}" in line and "being written by another toolkit process" in line
        assert snapshot(out) == before
    finally:
        first.send_signal(signal.SIGCONT)
    _, err = first.communicate(timeout=240)
    assert first.returncode == 0, err
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2]
    assert Checkpoint.load(out).recipe.train.seed == 0


def test_the_lock_goes_with_a_killed_process(tmp_path: Path) -> None:
    """flock is released by the kernel when its holder dies, kill -9 included."""
    folder = tmp_path / "run"
    code = ("import sys, time; sys.path.insert(0, sys.argv[1]); from toolkit.engine.run_folder import RunFolder; "
            "RunFolder(sys.argv[2]).lock(); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(Path(__file__).parents[2]), str(folder)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(Exception, match=f"pid {holder.pid}"):
        RunFolder(folder).lock()
    holder.kill()
    holder.wait()
    mine = RunFolder(folder)
    mine.lock()  # free again
    mine.unlock()


def test_an_existing_file_as_out_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("not a folder")
    result = run_cli("pretrain", str(write_tiny_recipe(tmp_path)), "--out", str(tmp_path / "taken"))
    assert "is an existing file, not a folder" in one_error_line(result)
    assert (tmp_path / "taken").read_text() == "not a folder"


def test_an_unwritable_run_folder_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    result = run_cli("pretrain", str(write_tiny_recipe(tmp_path)), "--out", str(tmp_path / "file" / "run"))
    assert "cannot write the run folder" in one_error_line(result)


@pytest.mark.parametrize("name", ["recipe.toml", "metrics.jsonl"])
def test_out_on_a_folder_of_another_run_is_refused(tmp_path: Path, name: str) -> None:
    out = tmp_path / "other"
    out.mkdir()
    (out / name).write_text("another run's file\n")
    result = run_cli("pretrain", str(write_tiny_recipe(tmp_path)), "--out", str(out))
    line = one_error_line(result)
    assert "already holds a run" in line and "--resume" in line
    assert (out / name).read_text() == "another run's file\n"
    assert sorted(p.name for p in out.iterdir()) == [".lock", name]


def test_resume_accepts_the_checkpoint_file(finished_run: Path, tmp_path: Path) -> None:
    run = copy_of(finished_run, tmp_path)
    result = run_cli("pretrain", "--resume", str(run / "checkpoint.pt"), "--epochs", "2")
    assert result.returncode == 0, result.stderr
    assert Checkpoint.load(run).epoch == 2
    assert [json.loads(l)["epoch"] for l in (run / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2]


def test_resume_names_the_keys_that_cannot_change(finished_run: Path, tmp_path: Path) -> None:
    run = copy_of(finished_run, tmp_path)
    before = snapshot(run)
    line = one_error_line(run_cli("pretrain", "--resume", str(run), "--set", "model.width=32"))
    assert "model.width (8 -> 32) cannot change on resume" in line
    assert snapshot(run) == before


def test_resume_refuses_a_new_batch_size_mid_epoch(finished_run: Path, tmp_path: Path) -> None:
    run = copy_of(finished_run, tmp_path)
    ckpt = Checkpoint.load(run)
    ckpt.with_training(step_in_epoch=3, partial={"sums": {}, "seconds": 0.0, "images": 96}).save(run / "checkpoint.pt")
    line = one_error_line(run_cli("pretrain", "--resume", str(run), "--set", "train.batch_size=16"))
    assert "train.batch_size cannot change from 32 to 16 in the middle of epoch 2" in line


def test_finetune_resume_names_finetune_keys(tmp_path: Path) -> None:
    from tests.tiny_runs import tiny_recipe

    run = tmp_path / "ft"
    made = run_cli("finetune", str(tiny_recipe(tmp_path)), "--init", "none", "--epochs", "1", "--out", str(run))
    assert made.returncode == 0, made.stderr
    ckpt = Checkpoint.load(run)
    ckpt.with_training(step_in_epoch=1).save(run / "checkpoint.pt")
    line = one_error_line(run_cli("finetune", "--resume", str(run), "--set", "finetune.batch_size=40"))
    assert "finetune.batch_size cannot change from 20 to 40" in line


@pytest.mark.parametrize("content, expected", [
    (b"\xff\xfe garbage \x00", "is not a readable recipe; the checkpoint's recipe is used"),
    (None, "was edited (train.seed); the checkpoint's recipe is used"),  # split_seed stays
])
def test_resume_with_an_edited_or_garbage_recipe_file_warns(finished_run: Path, tmp_path: Path,
                                                             content: bytes | None, expected: str) -> None:
    run = copy_of(finished_run, tmp_path)
    recipe = run / "recipe.toml"
    recipe.write_bytes(content if content is not None else recipe.read_bytes().replace(b"\nseed = 0", b"\nseed = 5"))
    result = run_cli("pretrain", "--resume", str(run), "--epochs", "2")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:") and "recipe" in line]
    assert len(warnings) == 1 and expected in warnings[0], result.stderr
    assert Checkpoint.load(run).recipe.train.seed == 0
    assert "\nseed = 0" in recipe.read_text()  # rewritten with the recipe in force


def test_stale_temp_files_of_dead_processes_are_removed(finished_run: Path, tmp_path: Path) -> None:
    run = copy_of(finished_run, tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    stale = run / f".checkpoint.pt.tmp-{dead_pid}"
    stale.write_bytes(b"half a checkpoint")
    alive = run / f".curves.png.tmp-{os.getpid()}"  # a live writer's file stays
    alive.write_bytes(b"being written")
    result = run_cli("pretrain", "--resume", str(run), "--epochs", "2")
    assert result.returncode == 0, result.stderr
    assert not stale.exists() and alive.exists()
    assert "removed 1 temporary file(s)" in result.stderr


def test_atomic_path_leaves_the_old_file_on_error_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new" and [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    assert remove_stale_temps(tmp_path) == []
