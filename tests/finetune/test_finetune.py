"""``toolkit finetune``: the run end to end through the CLI, batches, initial weights, user errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import run_cli
from tests.test_cli import invoke
from tests.tiny_runs import pretrain_at_init, tiny_recipe
from toolkit.engine.checkpoint import Checkpoint, build_training_model
from toolkit.config import load_recipe
from toolkit.engine.distributed import DistEnv, seed_everything
from toolkit.errors import ToolkitError
from toolkit.data.store import ImageStore


def test_finetune_cli_end_to_end(tmp_path: Path) -> None:
    """Init from a pretrain run, backbone frozen throughout: its weights must arrive unchanged."""
    init = pretrain_at_init(tmp_path, seed=7)
    recipe = tiny_recipe(tmp_path)
    run = tmp_path / "ft"
    result = run_cli("finetune", str(recipe), "--loss", "contrastive", "--init", str(init), "--out", str(run),
                     "--set", "finetune.freeze_backbone_epochs=2", "--set", "finetune.pairs=balanced")
    assert result.returncode == 0, result.stderr
    assert {"recipe.toml", "metrics.jsonl", "checkpoint.pt", "curves.png"} <= {p.name for p in run.iterdir()}
    assert f"init: backbone of {init / 'checkpoint.pt'}" in result.stderr
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2]
    for r in records:
        assert 0 <= r["active_fraction"] <= 1 and 0 <= r["knn_top1"] <= 1

    ckpt = Checkpoint.load(run)
    assert ckpt.kind == "finetune" and ckpt.epoch == 2 and ckpt.embedding_dim == 16
    assert ckpt.recipe.finetune.loss == "contrastive"
    assert ckpt.recipe.finetune.init == str((init / "checkpoint.pt").resolve())
    start = Checkpoint.load(init).weights
    seed_everything(0)  # the run's own initial weights: what it would train without --init
    fresh = build_training_model(ckpt.recipe, "finetune").state_dict()
    assert not torch.equal(fresh["backbone.features.0.weight"], start["backbone.features.0.weight"])
    for key, value in ckpt.weights.items():
        if key.startswith("backbone.") and "running" not in key and "num_batches" not in key:
            assert torch.equal(value, start[key]), key  # copied, then frozen (lr 0) for both epochs
    assert any(not torch.equal(v, ckpt.weights[k]) for k, v in fresh.items() if k.startswith("head."))  # it trained

    encoder = ckpt.encoder()
    out = encoder(torch.rand(3, 1, 16, 16))
    assert out.shape == (3, 16)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)

    from toolkit.evaluate.job import EpisodeSpec, evaluate

    evaluate(run, spec=EpisodeSpec(way=5, shot=1, query=5, episodes=20), plots=False)
    assert json.loads((run / "eval.json").read_text())["checkpoint"]["kind"] == "finetune"


def test_init_adopts_the_checkpoint_architecture(tmp_path: Path) -> None:
    from toolkit.finetune_init import resolve_init

    init = pretrain_at_init(tmp_path, extra="")
    user = load_recipe(str(tiny_recipe(tmp_path)), {"finetune.init": str(init), "model.width": 32, "data.image_size": 24})
    adopted, ckpt = resolve_init(user)
    assert ckpt is not None and adopted.model.width == 8 and adopted.data.image_size == 16
    assert adopted.finetune.init == str((init / "checkpoint.pt").resolve())

    wrong = load_recipe(str(tiny_recipe(tmp_path)), {"finetune.init": str(init), "data.channels": 3})
    with pytest.raises(ToolkitError, match="1-channel images but this recipe has data.channels=3"):
        resolve_init(wrong)


def _fake_checkpoint(path: Path, kind: str, mtime: float) -> None:
    path.parent.mkdir(parents=True)
    Checkpoint(kind=kind, recipe_dict={}, weights={}, preprocessing=None).save(path)
    os.utime(path, (mtime, mtime))


def test_default_init_is_the_newest_pretrain_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from toolkit.finetune_init import latest_pretrain_checkpoint, resolve_init

    monkeypatch.chdir(tmp_path)
    recipe = load_recipe(None)
    assert resolve_init(recipe)[1] is None  # no runs/ at all: random weights
    _fake_checkpoint(tmp_path / "runs/old/checkpoint.pt", "pretrain", 1_000)
    _fake_checkpoint(tmp_path / "runs/demo/new/checkpoint.pt", "pretrain", 2_000)
    _fake_checkpoint(tmp_path / "runs/newest-finetune/checkpoint.pt", "finetune", 3_000)
    (tmp_path / "runs/torn").mkdir()
    (tmp_path / "runs/torn/checkpoint.pt").write_bytes(b"not a checkpoint")
    assert latest_pretrain_checkpoint() == Path("runs/demo/new/checkpoint.pt")
    forced = load_recipe(None, {"finetune.init": "none"})
    assert resolve_init(forced) == (forced, None)


def test_default_init_is_a_run_on_the_same_data_with_the_same_channels(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from toolkit.finetune_init import latest_pretrain_checkpoint

    monkeypatch.chdir(tmp_path)

    def fake(name: str, path: str, channels: int, mtime: float) -> None:
        file = tmp_path / "runs" / name / "checkpoint.pt"
        file.parent.mkdir(parents=True)
        Checkpoint(kind="pretrain", recipe_dict={"data": {"path": path, "channels": channels}}, weights={},
                   preprocessing=None).save(file)
        os.utime(file, (mtime, mtime))

    fake("digits-old", "digits", 1, 1_000)
    fake("omniglot", "omniglot.csv", 1, 2_000)
    fake("cifar", "cifar10", 3, 3_000)  # the newest, but RGB
    digits = load_recipe(None).data
    assert latest_pretrain_checkpoint(Path("runs"), digits) == Path("runs/digits-old/checkpoint.pt")
    # Runs on other data that record no split are never a silent fallback (tests/data/test_split_guard.py
    # covers the fallback to a run whose recorded split holds none of the test images).
    other_gray = load_recipe(None, {"data.path": "elsewhere"}).data
    assert latest_pretrain_checkpoint(Path("runs"), other_gray) is None
    rgb = load_recipe(None, {"data.path": "cifar10", "data.channels": 3}).data
    assert latest_pretrain_checkpoint(Path("runs"), rgb) == Path("runs/cifar/checkpoint.pt")
    assert latest_pretrain_checkpoint(Path("runs")) == Path("runs/cifar/checkpoint.pt")  # no data: the newest


def _store(labels: list[int]) -> ImageStore:
    n = len(labels)
    return ImageStore(torch.zeros(n, 1, 8, 8, dtype=torch.uint8), np.array(labels), [str(c) for c in range(max(labels) + 1)],
                      [f"{i}" for i in range(n)], [])


@pytest.mark.parametrize("world_size", [1, 2])
def test_balanced_plan_gives_m_images_of_c_classes_per_rank(world_size: int) -> None:
    from toolkit.finetune import FinetuneObjective

    labels = [0] * 50 + [1] * 3 + [2] * 20 + [3] * 7 + [4] * 2 + [5] * 30  # long tail, two tiny classes
    recipe = load_recipe(None, {"finetune.batch_size": 24, "finetune.m_per_class": 6})
    store = _store(labels)
    plans = [FinetuneObjective(recipe, store, DistEnv(rank, world_size, rank, torch.device("cpu"))).plan(epoch=3)
             for rank in range(world_size)]
    assert len(plans[0]) == -(-len(labels) // 24)
    for step in range(len(plans[0])):
        merged = [key for plan in plans for key in plan[step]]
        assert len(merged) == 24
        for plan in plans:  # every rank holds whole classes of 6
            classes, counts = np.unique(store.labels[[i for i, _ in plan[step]]], return_counts=True)
            assert set(counts) == {6}
        assert len({int(store.labels[i]) for i, _ in merged}) == 4
        assert len({seed for _, seed in merged}) == 24  # every view gets its own augmentation seed


def test_loss_and_param_groups_follow_the_recipe() -> None:
    from toolkit.finetune import FinetuneObjective
    from toolkit.losses.contrastive import ContrastiveLoss
    from toolkit.losses.distances import CosineDistance, EuclideanDistance
    from toolkit.losses.mining import BalancedPairs, HardTriplets
    from toolkit.losses.triplet import TripletLoss

    recipe = load_recipe(None, {"finetune.loss": "triplet", "finetune.mining": "hard", "finetune.triplet_margin": 0.3,
                                "finetune.distance": "cosine", "finetune.backbone_lr_scale": 0.25,
                                "finetune.freeze_backbone_epochs": 2, "finetune.sampler": "random"})
    env = DistEnv(0, 1, 0, torch.device("cpu"))
    objective = FinetuneObjective(recipe, _store([0, 1] * 40), env)
    assert isinstance(objective.loss, TripletLoss)
    assert isinstance(objective.loss.miner, HardTriplets) and isinstance(objective.loss.distance, CosineDistance)
    assert objective.loss.margin == 0.3
    backbone, head = objective.param_groups()
    assert (backbone.lr_scale, backbone.frozen_epochs, head.lr_scale, head.frozen_epochs) == (0.25, 2, 1.0, 0)
    assert len(backbone.params) == len(list(objective.model.backbone.parameters()))
    contrastive = load_recipe(None, {"finetune.loss": "contrastive", "finetune.pairs": "balanced",
                                     "finetune.contrastive_margin": 0.7, "finetune.sampler": "random"})
    loss = FinetuneObjective(contrastive, _store([0, 1] * 40), env).loss
    assert isinstance(loss, ContrastiveLoss) and loss.margin == 0.7
    assert isinstance(loss.miner, BalancedPairs) and isinstance(loss.distance, EuclideanDistance)


@pytest.mark.parametrize("args, message", [
    (["--set", "finetune.batch_size=30", "--set", "finetune.m_per_class=4"],
     "finetune.batch_size=30 is not divisible by finetune.m_per_class=4"),
    (["--set", "finetune.batch_size=64", "--set", "finetune.m_per_class=4"],
     "the training data has 10 classes but finetune.batch_size=64 / finetune.m_per_class=4 = 16 classes per batch"),
    (["--loss", "hinge"], "'finetune.loss' is 'hinge'; valid: triplet, contrastive"),
    (["--init", "/nonexistent/run"], "/nonexistent/run: no such checkpoint"),
])
def test_user_mistakes_give_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    result = invoke("finetune", *args, "--out", str(tmp_path / "run"), *(["--init", "none"] if "--init" not in args else []))
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error: ") and message in lines[-1], result.output
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_resume_refuses_a_pretrain_run(tmp_path: Path) -> None:
    init = pretrain_at_init(tmp_path)
    result = invoke("finetune", "--resume", str(init))
    assert result.exit_code == 2
    assert "this is a pretrain run; use toolkit pretrain --resume" in result.output


def test_unlabeled_data_is_refused(tmp_path: Path) -> None:
    from tests.conftest import shape_image, write_image

    rng = np.random.default_rng(0)
    for i in range(30):
        write_image(tmp_path / "imgs" / f"{i}.png", shape_image(i, rng))
    result = invoke("finetune", "--init", "none", "--data", str(tmp_path / "imgs"), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2
    assert "finetune needs labeled images" in result.output.strip().splitlines()[-1]
