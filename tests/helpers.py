"""Running the CLI in a subprocess, the way users and CI do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

TINY_RECIPE = """
name = "tiny"
[data]
path = "digits"
image_size = 16
channels = 1
train_limit = 384
test_limit = 120
[augment]
crop_min_scale = 0.5
hflip = 0.0
[model]
backbone = "convnet"
width = 8
dim = 64
proj_layers = 2
[optim]
base_lr = 0.1
[train]
epochs = 2
batch_size = 32
workers = 0
knn_k = 10
init_batches = 2
"""


def write_tiny_recipe(folder: Path, extra: str = "") -> Path:
    path = folder / "tiny.toml"
    path.write_text(TINY_RECIPE + extra)
    return path


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", COLUMNS="200")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def toolkit_cmd(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "cli.py"), *args]


def run_cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(toolkit_cmd(*args), capture_output=True, text=True, env=cli_env(), timeout=timeout, cwd=REPO)
