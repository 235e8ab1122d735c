"""``toolkit finetune --loss proto``: episode batches, the learned temperature's parameter group, a tiny run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_cli import invoke
from tests.tiny_runs import pretrain_at_init, tiny_recipe
from toolkit.config import load_recipe
from toolkit.data.store import ImageStore
from toolkit.engine import checkpoint
from toolkit.engine.distributed import DistEnv


def _store(labels: list[int]) -> ImageStore:
    n = len(labels)
    return ImageStore(torch.zeros(n, 1, 8, 8, dtype=torch.uint8), np.array(labels), [str(c) for c in range(max(labels) + 1)],
                      [f"{i}" for i in range(n)], [])


def test_proto_plan_is_way_classes_of_shot_plus_query() -> None:
    from toolkit.finetune import FinetuneObjective
    from toolkit.losses.prototypical import PrototypicalLoss

    labels = [c for c in range(8) for _ in range(6)]
    recipe = load_recipe(None, {"finetune.loss": "proto", "finetune.way": 4, "finetune.shot": 2, "finetune.query": 3,
                                "finetune.proto_distance": "cosine"})
    objective = FinetuneObjective(recipe, _store(labels), DistEnv(0, 1, 0, torch.device("cpu")))
    assert isinstance(objective.loss, PrototypicalLoss) and objective.loss.distance == "cosine"
    plan = objective.plan(epoch=2)
    assert len(plan) == -(-len(labels) // 20)
    for batch in plan:
        blocks = np.array([labels[i] for i, _ in batch]).reshape(4, 5)
        assert (blocks == blocks[:, :1]).all() and len(set(blocks[:, 0])) == 4
    groups = objective.param_groups()
    assert [g.name for g in groups] == ["backbone", "head", "loss"]
    assert groups[-1].params == [objective.loss.log_scale]


def test_proto_finetune_runs_and_trains(tmp_path: Path) -> None:
    init = pretrain_at_init(tmp_path)
    run = tmp_path / "proto"
    result = invoke("finetune", str(tiny_recipe(tmp_path)), "--loss", "proto", "--init", str(init), "--out", str(run),
                    "--epochs", "1", "--set", "finetune.way=5", "--set", "finetune.shot=2", "--set", "finetune.query=2",
                    "--set", "finetune.proto_distance=cosine")
    assert result.exit_code == 0, result.output
    assert "5-way 2-shot episodes with 2 queries per class" in result.output
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1] and np.isfinite(records[-1]["loss"])
    assert records[0]["proto_scale"] == pytest.approx(10.0) and records[-1]["proto_scale"] != pytest.approx(10.0)
    ckpt = checkpoint.load(run)
    assert ckpt.recipe.finetune.loss == "proto" and ckpt.embedding_dim == 16
    # the learned scale is in the checkpoint (its last value, not the initial 10), and its group has no weight decay
    scale = float(ckpt.training.loss_state["log_scale"].exp())
    assert scale != pytest.approx(10.0) and scale == pytest.approx(records[-1]["proto_scale"], rel=0.2)
    groups = {g["name"]: g for g in ckpt.training.optimizer["param_groups"]}
    assert groups["loss"]["weight_decay"] == 0.0 and groups["head"]["weight_decay"] == ckpt.recipe.finetune.weight_decay > 0


def test_proto_way_larger_than_the_classes_is_one_line(tmp_path: Path) -> None:
    result = invoke("finetune", "--loss", "proto", "--init", "none", "--out", str(tmp_path / "run"),
                    "--set", "finetune.way=11")
    assert result.exit_code == 2, result.output
    assert "error: finetune.way=11 is larger than the 10 training classes" in result.output


def test_proto_plan_gives_each_of_two_ranks_a_full_different_slice() -> None:
    """The episode is drawn once; rank r holds classes r*way/2 .. (r+1)*way/2 - 1 of it, never an empty batch."""
    from toolkit.finetune import FinetuneObjective

    labels = [c for c in range(8) for _ in range(6)]
    recipe = load_recipe(None, {"finetune.loss": "proto", "finetune.way": 4, "finetune.shot": 2, "finetune.query": 3})
    whole = FinetuneObjective(recipe, _store(labels), DistEnv(0, 1, 0, torch.device("cpu"))).plan(epoch=1)
    ranks = [FinetuneObjective(recipe, _store(labels), DistEnv(r, 2, 0, torch.device("cpu"))).plan(epoch=1) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(whole) > 0
    for full, first, second in zip(whole, *ranks):
        assert len(first) == len(second) == 10  # 2 classes x (2 + 3) each
        assert first + second == full  # the two slices make up the global episode
        classes = [{labels[i] for i, _ in half} for half in (first, second)]
        assert len(classes[0]) == len(classes[1]) == 2 and not classes[0] & classes[1]


def test_proto_scale_has_no_weight_decay_and_is_saved_with_the_run(tmp_path: Path) -> None:
    from toolkit.finetune import FinetuneObjective

    labels = [c for c in range(8) for _ in range(6)]
    recipe = load_recipe(None, {"finetune.loss": "proto", "finetune.proto_distance": "cosine", "finetune.weight_decay": 0.5,
                                "finetune.way": 4})
    objective = FinetuneObjective(recipe, _store(labels), DistEnv(0, 1, 0, torch.device("cpu")))
    loss_group = [g for g in objective.param_groups() if g.name == "loss"]
    assert len(loss_group) == 1 and loss_group[0].weight_decay == 0.0
    assert objective.trained_beside_model() is objective.loss
