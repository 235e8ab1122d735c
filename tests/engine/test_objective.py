"""Each objective owns its loop settings; the loop's messages name the objective's own recipe keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_cli import invoke
from tests.tiny_runs import tiny_recipe
from toolkit.config import load_recipe
from toolkit.engine.objective import check_batch_size
from toolkit.errors import ToolkitError
from toolkit.finetune import metric_settings
from toolkit.pretrain import simsiam_settings


def test_settings_come_from_each_objectives_own_section() -> None:
    recipe = load_recipe(None, {"train.batch_size": 64, "train.epochs": 7, "optim.base_lr": 0.03, "optim.weight_decay": 5e-4,
                                "finetune.batch_size": 40, "finetune.epochs": 3, "finetune.base_lr": 0.2,
                                "finetune.weight_decay": 1e-5, "optim.momentum": 0.8, "train.knn_k": 11})
    simsiam, metric = simsiam_settings(recipe), metric_settings(recipe)
    assert (simsiam.batch_size, simsiam.epochs, simsiam.base_lr, simsiam.weight_decay) == (64, 7, 0.03, 5e-4)
    assert (metric.batch_size, metric.epochs, metric.base_lr, metric.weight_decay) == (40, 3, 0.2, 1e-5)
    assert simsiam.momentum == metric.momentum == 0.8 and simsiam.knn_k == metric.knn_k == 11
    assert (simsiam.batch_size_key, simsiam.lr_key) == ("train.batch_size", "optim.base_lr")
    assert (metric.batch_size_key, metric.lr_key) == ("finetune.batch_size", "finetune.base_lr")


def test_batch_checks_name_the_objectives_key() -> None:
    recipe = load_recipe(None, {"finetune.batch_size": 30, "train.batch_size": 128})
    with pytest.raises(ToolkitError, match=r"^finetune.batch_size=30 must be divisible by the 4 processes$"):
        check_batch_size(metric_settings(recipe), 4)
    with pytest.raises(ToolkitError, match=r"finetune.batch_size=30 is larger than the 20 training images; lower finetune.batch_size"):
        check_batch_size(metric_settings(recipe), 1, 20)
    with pytest.raises(ToolkitError, match=r"^train.batch_size=\d+ is larger than the 100 training images; lower train.batch_size$"):
        check_batch_size(simsiam_settings(recipe), 1, 100)


def test_a_finetune_divergence_names_finetune_keys(tmp_path: Path) -> None:
    result = invoke("finetune", str(tiny_recipe(tmp_path)), "--init", "none", "--epochs", "1", "--out", str(tmp_path / "run"),
                    "--set", "finetune.base_lr=1e30", "--set", "train.precision=fp32")
    assert result.exit_code == 3, result.output
    last = result.output.strip().splitlines()[-1]
    assert "Lower finetune.base_lr" in last and "optim.base_lr" not in last
    assert "train.precision=fp32" not in last  # it is fp32 already
