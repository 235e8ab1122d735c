"""A failed ``toolkit evaluate`` leaves no empty ``--out`` folder (folders that existed are kept)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli import invoke
from tests.tiny_models import make_checkpoint
from toolkit.out_paths import removed_if_failed


def test_a_failed_evaluate_removes_the_out_folders_it_created(tmp_path: Path) -> None:
    run = make_checkpoint(tmp_path / "run", kind="finetune")
    out = tmp_path / "new" / "eval"
    result = invoke("evaluate", str(run), "--out", str(out), "--way", "50")  # digits have 10 classes
    assert result.exit_code == 2, result.output
    assert "--way" in result.output or "way" in result.output
    assert not (tmp_path / "new").exists()


def test_existing_or_filled_folders_are_kept(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    kept.mkdir()
    with pytest.raises(RuntimeError), removed_if_failed(kept / "a" / "b"):
        (kept / "a" / "b").mkdir(parents=True)
        raise RuntimeError
    assert kept.is_dir() and not (kept / "a").exists()
    with pytest.raises(RuntimeError), removed_if_failed(kept / "c" / "d"):
        (kept / "c" / "d").mkdir(parents=True)
        (kept / "c" / "note.txt").write_text("written by the failed command before it failed")
        raise RuntimeError
    assert not (kept / "c" / "d").exists() and (kept / "c" / "note.txt").exists()
    with removed_if_failed(kept / "e"):
        (kept / "e").mkdir()
    assert (kept / "e").is_dir()  # success keeps everything
