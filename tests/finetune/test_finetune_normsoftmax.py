"""``toolkit finetune --loss normsoftmax``: the class proxies are trained, saved with the run and not decayed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from tests.test_cli import invoke
from tests.tiny_runs import pretrain_at_init, tiny_recipe
from toolkit.config import load_recipe
from toolkit.data.store import ImageStore
from toolkit.engine import checkpoint
from toolkit.engine.distributed import DistEnv


def test_proxies_one_per_class_of_the_embedding_width_without_weight_decay() -> None:
    from toolkit.finetune import FinetuneObjective

    labels = np.array([c for c in range(6) for _ in range(4)])
    store = ImageStore(torch.zeros(len(labels), 1, 8, 8, dtype=torch.uint8), labels, [str(c) for c in range(6)],
                       [str(i) for i in range(len(labels))], [])
    recipe = load_recipe(None, {"finetune.loss": "normsoftmax", "finetune.embedding_dim": 24, "finetune.weight_decay": 0.5,
                                "finetune.batch_size": 16})
    objective = FinetuneObjective(recipe, store, DistEnv(0, 1, 0, torch.device("cpu")))
    assert tuple(objective.loss.proxies.shape) == (6, 24)
    groups = {g.name: g for g in objective.param_groups()}
    assert groups["loss"].params == [objective.loss.proxies] and groups["loss"].weight_decay == 0.0
    assert objective.trained_beside_model() is objective.loss


def test_normsoftmax_finetune_trains_and_saves_its_proxies(tmp_path: Path) -> None:
    init = pretrain_at_init(tmp_path)
    run = tmp_path / "normsoftmax"
    result = invoke("finetune", str(tiny_recipe(tmp_path)), "--loss", "normsoftmax", "--init", str(init), "--out", str(run),
                    "--epochs", "3", "--set", "finetune.softmax_temperature=0.1")
    assert result.exit_code == 0, result.output
    assert "loss: normsoftmax (cosine to 10 learned class proxies / T = 0.1)" in result.output
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [0, 1, 2, 3] and records[-1]["loss"] < records[1]["loss"]
    ckpt = checkpoint.load(run)
    proxies = ckpt.training.loss_state["proxies"]
    assert tuple(proxies.shape) == (10, 16)  # the ten digits, the tiny recipe's 16-d embedding
    groups = {g["name"]: g for g in ckpt.training.optimizer["param_groups"]}
    assert groups["loss"]["weight_decay"] == 0.0


def test_temperature_must_be_positive(tmp_path: Path) -> None:
    result = invoke("finetune", str(tiny_recipe(tmp_path)), "--loss", "normsoftmax", "--init", "none",
                    "--out", str(tmp_path / "bad"), "--set", "finetune.softmax_temperature=0")
    assert result.exit_code == 2 and "finetune.softmax_temperature" in result.output
