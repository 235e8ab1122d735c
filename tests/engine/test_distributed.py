"""Two gloo processes on the CPU: DistributedDataParallel keeps the ranks' weights identical."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from tests.helpers import REPO, cli_env, run_cli, write_tiny_recipe
from toolkit.engine.checkpoint import Checkpoint
from toolkit.engine.distributed import GlobalBatchNorm


def test_two_process_gloo_run_keeps_identical_weights(tmp_path: Path) -> None:
    recipe = write_tiny_recipe(tmp_path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(REPO / "tests" / "dist_worker.py"), str(recipe), str(tmp_path / "run")]
    result = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    # weights really changed, and rank 0's checkpoint holds them
    saved = Checkpoint.load(tmp_path / "run").weights
    assert all(torch.equal(saved[k], rank0[k]) for k in rank0)


def test_cli_nproc_launches_local_processes(tmp_path: Path) -> None:
    recipe = write_tiny_recipe(tmp_path)
    result = run_cli("pretrain", str(recipe), "--nproc", "2", "--out", str(tmp_path / "run"), "--epochs", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "x2" in result.stderr  # "device cpu x2"
    assert Checkpoint.load(tmp_path / "run").epoch == 1


def test_global_batchnorm_equals_batchnorm_on_the_whole_batch_alone() -> None:
    """Outside a process group GlobalBatchNorm is plain batch norm (same keys, same numbers)."""
    torch.manual_seed(0)
    bn, gbn = torch.nn.BatchNorm2d(4), GlobalBatchNorm(4)
    gbn.load_state_dict(bn.state_dict())
    x = torch.randn(8, 4, 5, 5)
    assert torch.allclose(bn(x), gbn(x))
    assert torch.allclose(bn.running_var, gbn.running_var)


def test_global_batchnorm_across_two_processes_matches_full_batch(tmp_path: Path) -> None:
    """Forward, input gradients and running statistics equal BatchNorm on the concatenated batch."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(REPO / "tests" / "dist_bn_worker.py"), str(tmp_path)]
    result = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "bn0.txt").read_text() == "ok" and (tmp_path / "bn1.txt").read_text() == "ok"
