"""Interrupted runs resume to exactly the weights of an uninterrupted run (CPU)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import torch

from tests.helpers import cli_env, run_cli, toolkit_cmd, write_tiny_recipe
from toolkit.engine.checkpoint import Checkpoint


def weights(run: Path) -> dict[str, torch.Tensor]:
    return Checkpoint.load(run).weights


def start_and_signal(recipe: Path, out: Path, sig: int) -> subprocess.Popen:
    """Start a run, wait until epoch 1 is recorded, then send ``sig`` (during epoch 2)."""
    proc = subprocess.Popen(toolkit_cmd("pretrain", str(recipe), "--out", str(out)), env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline:
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        if any(json.loads(line)["epoch"] == 1 for line in lines if line.strip()):
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    return proc


def test_kill9_in_second_epoch_then_resume_matches_uninterrupted(tmp_path: Path) -> None:
    recipe = write_tiny_recipe(tmp_path, "")
    recipe.write_text(recipe.read_text().replace("epochs = 2", "epochs = 3"))
    full = run_cli("pretrain", str(recipe), "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr

    killed = start_and_signal(recipe, tmp_path / "killed", signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    assert Checkpoint.load(tmp_path / "killed").epoch < 3
    resumed = run_cli("pretrain", "--resume", str(tmp_path / "killed"))
    assert resumed.returncode == 0, resumed.stderr

    expected, got = weights(tmp_path / "full"), weights(tmp_path / "killed")
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    epochs = [json.loads(l)["epoch"] for l in (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [0, 1, 2, 3]


def test_ctrl_c_saves_mid_epoch_and_resume_matches(tmp_path: Path) -> None:
    recipe = write_tiny_recipe(tmp_path)
    recipe.write_text(recipe.read_text().replace("epochs = 2", "epochs = 3"))
    full = run_cli("pretrain", str(recipe), "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr

    stopped = start_and_signal(recipe, tmp_path / "stopped", signal.SIGINT)
    err = stopped.stderr.read()
    assert stopped.returncode == 130, err
    assert "checkpoint saved" in err and "Traceback" not in err
    saved = Checkpoint.load(tmp_path / "stopped")
    assert saved.epoch < 3
    resumed = run_cli("pretrain", "--resume", str(tmp_path / "stopped"))
    assert resumed.returncode == 0, resumed.stderr
    expected, got = weights(tmp_path / "full"), weights(tmp_path / "stopped")
    assert all(torch.equal(expected[k], got[k]) for k in expected)


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path: Path) -> None:
    recipe = write_tiny_recipe(tmp_path, "")
    result = run_cli("pretrain", str(recipe), "--out", str(tmp_path / "nan"), "--set", "optim.base_lr=1e30",
                     "--set", "train.precision=fp32")
    assert result.returncode == 3, result.stderr
    assert "loss became nan" in result.stderr and "Traceback" not in result.stderr
    assert Checkpoint.load(tmp_path / "nan").epoch == 0  # the last good one, from initialisation
