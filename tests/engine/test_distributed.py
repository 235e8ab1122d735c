"""Two gloo processes on the CPU: DistributedDataParallel keeps the ranks' weights identical."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO, cli_env, run_cli
from tests.tiny_runs import tiny_recipe
from toolkit.config import load_recipe
from toolkit.engine.checkpoint import Checkpoint, build_training_model
from toolkit.engine.distributed import GlobalBatchNorm, seed_everything


def _initial_weights(recipe: Path, kind: str, sets: list[str]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The weights a run starts from (the model built right after seeding, as pretrain/finetune do) and
    the names of its trainable weight matrices."""
    resolved = load_recipe(str(recipe), sets=sets)
    seed_everything(resolved.train.seed)
    model = build_training_model(resolved, kind)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad and n.endswith(".weight")]
    return model.state_dict(), trainable


@pytest.mark.parametrize("kind, sets", [
    ("pretrain", []),
    ("finetune", ["finetune.init=none", "finetune.batch_size=16", "finetune.m_per_class=4", "finetune.epochs=1"]),
])
def test_two_process_gloo_run_keeps_identical_weights(tmp_path: Path, kind: str, sets: list[str]) -> None:
    recipe = tiny_recipe(tmp_path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(REPO / "tests" / "dist_worker.py"), str(recipe), str(tmp_path / "run"), kind, *sets]
    result = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert rank0.keys() == rank1.keys()
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)
    # the weights really changed from where both ranks started ...
    start, trained = _initial_weights(recipe, kind, sets)
    assert start.keys() == rank0.keys() and len(trained) >= 4
    changed = [k for k in trained if not torch.equal(start[k], rank0[k])]
    assert changed == trained, set(trained) - set(changed)
    # ... and rank 0's checkpoint holds them
    saved = Checkpoint.load(tmp_path / "run").weights
    assert all(torch.equal(saved[k], rank0[k]) for k in rank0)


def test_two_process_proto_finetune_gives_both_ranks_episodes_and_identical_weights(tmp_path: Path) -> None:
    """Each rank trains on its own half of every episode (2 of 4 classes); weights and learned scale stay equal."""
    recipe = tiny_recipe(tmp_path)
    sets = ["finetune.init=none", "finetune.loss=proto", "finetune.proto_distance=cosine", "finetune.way=4",
            "finetune.shot=1", "finetune.query=2", "finetune.epochs=1"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
           str(REPO / "tests" / "dist_proto_worker.py"), str(recipe), str(tmp_path / "run"), *sets]
    result = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    from toolkit.data.store import load_data

    train_labels = load_data(load_recipe(str(recipe), sets=sets).data).train.labels
    assert len(ranks[0]["batches"]) == len(ranks[1]["batches"]) > 0
    for first, second in zip(ranks[0]["batches"], ranks[1]["batches"]):
        assert len(first) == len(second) == 2 * 3  # 2 whole classes of 1 support + 2 queries on each rank
        assert not {int(train_labels[i]) for i in first} & {int(train_labels[i]) for i in second}
    weights = [r["weights"] for r in ranks]
    assert weights[0].keys() == weights[1].keys() and all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    assert torch.equal(ranks[0]["loss"]["log_scale"], ranks[1]["loss"]["log_scale"])
    start, trained = _initial_weights(recipe, "finetune", sets)
    assert [k for k in trained if not torch.equal(start[k], weights[0][k])] == trained  # it trained
    assert float(ranks[0]["loss"]["log_scale"].exp()) != pytest.approx(10.0)


def test_cli_nproc_launches_local_processes(tmp_path: Path) -> None:
    """``--nproc`` through the CLI (pretrain and finetune share ``_start_training``; DDP pretraining itself
    is checked by the two-process run above), with the command's own options passed on to every process."""
    command, extra = "finetune", ["--init", "none", "--set", "finetune.batch_size=16"]
    recipe = tiny_recipe(tmp_path)
    result = run_cli(command, str(recipe), "--nproc", "2", "--out", str(tmp_path / "run"), "--epochs", "1", *extra)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "x2" in result.stderr  # "device cpu x2"
    ckpt = Checkpoint.load(tmp_path / "run")
    assert ckpt.kind == command and ckpt.epoch == 1


def test_nproc_zero_is_a_one_line_error(tmp_path: Path) -> None:
    result = run_cli("finetune", "--nproc", "0", "--init", "none", "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == ["error: --nproc 0: must be 1 or more"]


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
