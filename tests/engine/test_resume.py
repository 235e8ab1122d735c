"""Interrupted runs resume to exactly the weights of an uninterrupted run (CPU)."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import cli_env, run_cli, toolkit_cmd, write_tiny_recipe
from tests.tiny_runs import tiny_recipe
from toolkit.engine.checkpoint import Checkpoint

# What each covered command runs: pretraining (per-image and whole-batch augmentation), and prototypical fine-tuning whose cosine loss has a
# learned scale (trained beside the model: it must be saved and restored too).
COMMANDS = {
    "pretrain": ["pretrain"],
    "pretrain_batch_augment": ["pretrain", "--set", "data.batch_augment=true"],  # views made per batch, on the device
    "proto": ["finetune", "--loss", "proto", "--init", "none", "--set", "finetune.proto_distance=cosine",
              "--set", "finetune.way=4", "--set", "finetune.shot=1", "--set", "finetune.query=2",
              "--set", "finetune.epochs=3"],
}


def weights(run: Path) -> dict[str, torch.Tensor]:
    """The model's weights and, prefixed ``loss.``, a loss's learned parameters (the proto scale)."""
    ckpt = Checkpoint.load(run)
    return {**ckpt.weights, **{f"loss.{k}": v for k, v in ckpt.training.loss_state.items()}}


def start_and_signal(recipe: Path, out: Path, sig: int, kind: str = "pretrain") -> subprocess.Popen:
    """Start a run, wait until epoch 1 is recorded, then send ``sig`` (during epoch 2)."""
    command, *extra = COMMANDS[kind]
    proc = subprocess.Popen(toolkit_cmd(command, str(recipe), "--out", str(out), *extra), env=cli_env(),
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


@pytest.fixture(scope="module")
def three_epochs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """The tiny 3-epoch recipe, its uninterrupted run and which command (``COMMANDS``) made it."""
    kind = request.param
    folder = tmp_path_factory.mktemp(f"full-{kind}")
    recipe = tiny_recipe(folder) if kind == "proto" else write_tiny_recipe(folder, "")
    recipe.write_text(recipe.read_text().replace("epochs = 2", "epochs = 3"))
    command, *extra = COMMANDS[kind]
    full = run_cli(command, str(recipe), "--out", str(folder / "full"), *extra)
    assert full.returncode == 0, full.stderr
    return recipe, folder / "full", kind


def records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_same_run(expected_run: Path, got_run: Path) -> None:
    """Identical weights, and the same per-epoch statistics (all but the wall-clock rate)."""
    expected, got = weights(expected_run), weights(got_run)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    want, have = records(expected_run), records(got_run)
    assert [r["epoch"] for r in have] == [r["epoch"] for r in want] == [0, 1, 2, 3]
    for w, h in zip(want, have):
        assert w.keys() == h.keys()
        for key in w:
            if isinstance(w[key], str):  # e.g. which split the kNN monitor read
                assert h[key] == w[key], (w["epoch"], key)
            elif key != "img_per_s":
                assert h[key] == pytest.approx(w[key], rel=1e-6, abs=1e-9), (w["epoch"], key)


# Every command and every way of stopping is covered once: the pairs below, not the full cross
# product (9 interrupted runs, each with its resume, for no code path the pairs miss).
@pytest.mark.parametrize("three_epochs", ["pretrain", "proto"], indirect=True)
def test_kill9_in_second_epoch_then_resume_matches_uninterrupted(three_epochs: tuple[Path, Path, str], tmp_path: Path) -> None:
    recipe, full, kind = three_epochs
    killed = start_and_signal(recipe, tmp_path / "killed", signal.SIGKILL, kind)
    assert killed.returncode == -signal.SIGKILL
    assert Checkpoint.load(tmp_path / "killed").epoch < 3
    resumed = run_cli(COMMANDS[kind][0], "--resume", str(tmp_path / "killed"))
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(full, tmp_path / "killed")


@pytest.mark.parametrize("three_epochs, sig, code", [("pretrain_batch_augment", signal.SIGINT, 130), ("proto", signal.SIGINT, 130),
                                                      ("pretrain", signal.SIGTERM, 143)], indirect=["three_epochs"])
def test_ctrl_c_saves_mid_epoch_and_resume_matches(three_epochs: tuple[Path, Path, str], tmp_path: Path,
                                                   sig: int, code: int) -> None:
    """Ctrl-C, and SIGTERM (what schedulers send before a kill), save mid-epoch; resuming gives the uninterrupted run."""
    recipe, full, kind = three_epochs
    command = COMMANDS[kind][0]
    stopped = start_and_signal(recipe, tmp_path / "stopped", sig, kind)
    err = stopped.stderr.read()
    assert stopped.returncode == code, err
    assert "Traceback" not in err
    assert f"continue with: toolkit {command} --resume {tmp_path / 'stopped'}" in err
    saved = Checkpoint.load(tmp_path / "stopped")
    # the signal came during epoch 2: the checkpoint is in the middle of it, not at an epoch end
    assert saved.epoch == 1 and saved.training.mid_epoch and saved.training.partial is not None, err
    step = saved.training.step_in_epoch
    assert f"interrupted at epoch 2, step {step}/" in err
    assert [r["epoch"] for r in records(tmp_path / "stopped")] == [0, 1]
    resumed = run_cli(command, "--resume", str(tmp_path / "stopped"))
    assert resumed.returncode == 0, resumed.stderr
    assert f"after epoch 1, step {step}" in resumed.stderr
    assert_same_run(full, tmp_path / "stopped")


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path: Path) -> None:
    recipe = write_tiny_recipe(tmp_path, "")
    result = run_cli("pretrain", str(recipe), "--out", str(tmp_path / "nan"), "--set", "optim.base_lr=1e30",
                     "--set", "train.precision=fp32")
    assert result.returncode == 3, result.stderr
    assert "loss became nan" in result.stderr and "Traceback" not in result.stderr
    assert Checkpoint.load(tmp_path / "nan").epoch == 0  # the last good one, from initialisation
