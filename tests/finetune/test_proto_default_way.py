"""``finetune --loss proto`` on the default recipe: ``finetune.way`` defaults to min(20, training classes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_cli import invoke
from tests.tiny_runs import tiny_recipe
from toolkit.config import load_recipe
from toolkit.data.store import ImageStore
from toolkit.engine import checkpoint
from toolkit.errors import ToolkitError
from toolkit.finetune import resolve_way


def _store(classes: int) -> ImageStore:
    labels = np.repeat(np.arange(classes), 3)
    return ImageStore(torch.zeros(len(labels), 1, 8, 8, dtype=torch.uint8), labels, [str(c) for c in range(classes)],
                      [str(i) for i in range(len(labels))], [])


@pytest.mark.parametrize("classes, way", [(10, 10), (20, 20), (64, 20), (3, 3)])
def test_default_way_is_min_of_20_and_the_training_classes(classes: int, way: int) -> None:
    recipe = load_recipe(None, {"finetune.loss": "proto"})
    assert recipe.finetune.way == 0  # the default: decided from the data
    assert resolve_way(recipe, _store(classes)).finetune.way == way


def test_an_explicit_way_is_kept_and_way_1_is_refused() -> None:
    recipe = load_recipe(None, {"finetune.loss": "proto", "finetune.way": 7})
    assert resolve_way(recipe, _store(64)).finetune.way == 7
    with pytest.raises(ToolkitError, match="'finetune.way' is 1; valid: 0 .* or 2 or more"):
        load_recipe(None, {"finetune.way": 1})


def test_proto_finetune_on_digits_without_setting_way(tmp_path: Path) -> None:
    run = tmp_path / "proto"
    result = invoke("finetune", str(tiny_recipe(tmp_path)), "--loss", "proto", "--init", "none", "--out", str(run),
                    "--epochs", "1", "--set", "finetune.query=2")
    assert result.exit_code == 0, result.output
    assert "finetune.way = 10: min(20, the 10 training classes)" in result.output
    assert "10-way 1-shot episodes with 2 queries per class" in result.output
    assert checkpoint.load(run).recipe.finetune.way == 10  # the run records the value it used
