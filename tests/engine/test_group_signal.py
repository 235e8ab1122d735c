"""SIGTERM/SIGINT sent to the whole process group (``timeout -s TERM``, SLURM, a container stop).

DataLoader workers get the signal too; they must leave the decision to the training process,
which saves mid-epoch and exits 143 exactly as when only it is signalled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import torch

from tests.helpers import cli_env, run_cli, toolkit_cmd, write_tiny_recipe
from toolkit.engine.checkpoint import Checkpoint


def _wait_for_epoch_1(proc: subprocess.Popen, out: Path) -> None:
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline:
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        if any(json.loads(line)["epoch"] == 1 for line in lines if line.strip()):
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError("epoch 1 never recorded")


def test_group_sigterm_with_workers_saves_mid_epoch_and_resumes(tmp_path: Path) -> None:
    recipe = write_tiny_recipe(tmp_path, "")
    recipe.write_text(recipe.read_text().replace("epochs = 2", "epochs = 3").replace("workers = 0", "workers = 2"))
    out = tmp_path / "stopped"
    proc = subprocess.Popen(toolkit_cmd("pretrain", str(recipe), "--out", str(out)), env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for_epoch_1(proc, out)
        os.killpg(proc.pid, signal.SIGTERM)  # the whole group: the training process and its DataLoader workers
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and "killed by signal" not in err, err
    saved = Checkpoint.load(out)
    assert saved.epoch == 1 and saved.training.mid_epoch and saved.training.partial is not None, err
    assert f"interrupted at epoch 2, step {saved.training.step_in_epoch}/" in err
    resumed = run_cli("pretrain", "--resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    # the plan does not depend on the number of workers: an uninterrupted run without workers is the reference
    full = run_cli("pretrain", str(recipe), "--out", str(tmp_path / "full"), "--set", "train.workers=0")
    assert full.returncode == 0, full.stderr
    want, got = Checkpoint.load(tmp_path / "full").weights, Checkpoint.load(out).weights
    assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
