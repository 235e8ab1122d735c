"""The command line end to end on the built-in digits, and one-line errors for user mistakes."""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path

import pytest

from typer.testing import CliRunner

from cli import app
from tests.helpers import REPO, run_cli, write_tiny_recipe
from toolkit.engine.checkpoint import Checkpoint


def invoke(*args: str):  # noqa: ANN201 - click's Result
    """Run the CLI in this process (no interpreter start-up): for commands that stop before training."""
    import os

    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        return CliRunner().invoke(app, list(args))
    finally:
        os.chdir(cwd)


def test_pretrain_writes_the_run_folder(tmp_path: Path) -> None:
    recipe = write_tiny_recipe(tmp_path)
    result = run_cli("pretrain", str(recipe), "--out", str(tmp_path / "run"), "--set", "train.seed=3")
    assert result.returncode == 0, result.stderr
    run = tmp_path / "run"
    assert {"recipe.toml", "metrics.jsonl", "checkpoint.pt", "curves.png"} <= {p.name for p in run.iterdir()}
    resolved = tomllib.loads((run / "recipe.toml").read_text())
    assert resolved["train"]["seed"] == 3 and resolved["model"]["width"] == 8  # fully resolved
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert records[0]["img_per_s"] is None  # measured at initialisation, before any step
    for r in records:
        assert {"loss", "lr", "z_std", "z_std_ref", "knn_top1"} <= r.keys()
        assert r["z_std_ref"] == pytest.approx(1 / math.sqrt(64))
        assert 0 <= r["knn_top1"] <= 1
    assert records[-1]["img_per_s"] > 0
    assert "kNN top-1 (train bank, val queries):" in result.stderr and "at initialisation" in result.stderr
    ckpt = Checkpoint.load(run)
    assert ckpt.kind == "pretrain" and ckpt.epoch == 2 and ckpt.format_version == 3
    assert ckpt.preprocessing.image_size == 16 and ckpt.preprocessing.channels == 1


def test_unlabeled_data_skips_the_knn_monitor(tmp_path: Path) -> None:
    from tests.conftest import shape_image, write_image
    import numpy as np

    rng = np.random.default_rng(0)
    for i in range(40):
        write_image(tmp_path / "imgs" / f"{i}.png", shape_image(i, rng))
    recipe = write_tiny_recipe(tmp_path)
    result = run_cli("pretrain", str(recipe), "--data", str(tmp_path / "imgs"), "--out", str(tmp_path / "run"),
                     "--epochs", "1", "--set", "train.batch_size=16")
    assert result.returncode == 0, result.stderr
    assert "kNN monitor off" in result.stderr
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["knn_top1"] is None for r in records)


@pytest.mark.parametrize("args, message", [
    (["--set", "model.backbone=vgg"], "'model.backbone' is 'vgg'; valid: convnet"),
    (["--set", "train.epochs=two"], "'train.epochs' must be int"),
    (["--set", "train.bogus=1"], "unknown recipe key 'train.bogus'"),
    (["--data", "/nonexistent/folder"], "/nonexistent/folder: no such file or folder"),
    (["--set", "train.batch_size=100000"], "larger than the"),
    (["--device", "cuda:7"], "no CUDA device"),
    (["recipes/none.toml"], "recipe 'recipes/none.toml' not found"),
])
def test_user_mistakes_give_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = invoke("pretrain", *args, "--out", str(tmp_path / "run"))
    assert result.exit_code == 2, result.output
    lines = [l for l in result.output.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and message in lines[0], result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_existing_run_folder_and_bad_resume(tmp_path: Path) -> None:
    recipe = write_tiny_recipe(tmp_path)
    assert run_cli("pretrain", str(recipe), "--out", str(tmp_path / "run"), "--epochs", "1").returncode == 0
    again = run_cli("pretrain", str(recipe), "--out", str(tmp_path / "run"))
    assert again.returncode == 2 and "already holds a run" in again.stderr
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    bad = run_cli("pretrain", "--resume", str(tmp_path / "junk.pt"))
    assert bad.returncode == 2 and "not a readable toolkit checkpoint" in bad.stderr


def test_scoring_commands_keep_their_options() -> None:
    """The engine options are declared once (``scoring.commands.ENGINE_OPTIONS``); each command still has
    exactly the options it had when they were written out one by one, with the same defaults (plus score's
    --support-tta and embed's --tta, added since)."""
    import typer.main

    group = typer.main.get_command(app)
    index = group.commands["index"]  # type: ignore[attr-defined]
    commands = {"embed": group.commands["embed"], "score": group.commands["score"],  # type: ignore[attr-defined]
                "index build": index.commands["build"], "index add": index.commands["add"]}
    options = {name: {p.opts[0]: p.default for p in command.params if p.opts[0].startswith("--")}
               for name, command in commands.items()}
    engine = {"--backend": None, "--batch-size": 64, "--workers": None, "--threads": None, "--engine": "local",
              "--address": "auto", "--replicas": None, "--gpus-per-replica": 0.0}
    assert options["embed"] == {**engine, "--strict": False, "--out": Path("embeddings.npz"), "--force": False,
                                "--tta": 0}
    assert options["score"] == {**engine, "--strict": False, "--pairs": None, "--query": None, "--gallery": None,
                                "--support": None, "--index": None, "--top-k": 5, "--out": None, "--threshold": None,
                                "--device": "cpu", "--html": None, "--force": False, "--support-tta": None}
    assert options["index build"] == {**engine, "--out": None, "--kind": "flat", "--nprobe": None,
                                      "--shard-size": 50_000, "--device": "cpu"}
    assert options["index add"] == {"--batch-size": 64, "--workers": None, "--threads": None}
