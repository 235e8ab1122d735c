"""Recipe value ranges: every numeric key has one, out-of-range values fail at load with the key's name."""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path

import pytest

from tests.scoring.test_bad_input import only_line
from tests.test_cli import invoke
from toolkit.config import Recipe, load_recipe, replace
from toolkit.config_ranges import Range, range_of
from toolkit.errors import ToolkitError


def numeric_keys(cls: type = Recipe, prefix: str = "") -> list[str]:
    """Every int / float key of the recipe schema (``[]`` for the items of a tuple of numbers)."""
    keys = []
    hints = typing.get_type_hints(cls)
    for item in dataclasses.fields(cls):
        hint = hints[item.name]
        if dataclasses.is_dataclass(hint):
            keys += numeric_keys(hint, f"{prefix}{item.name}.")
        elif hint in (int, float):
            keys.append(f"{prefix}{item.name}")
        elif typing.get_origin(hint) is tuple and typing.get_args(hint)[0] in (int, float):
            keys.append(f"{prefix}{item.name}[]")
    return keys


def test_every_numeric_key_has_a_range() -> None:
    missing = [key for key in numeric_keys() if range_of(key) is None]
    assert not missing, f"add these keys to toolkit.config_ranges.RANGES: {missing}"


@pytest.mark.parametrize(("value", "inside"), [
    (Range(low=2), {2: True, 1.999: False, -4: False, 10**9: True, float("nan"): False, float("inf"): False}),
    (Range(low=0, low_open=True), {0: False, 1e-12: True, -1: False}),
    (Range(0.0, 1.0, high_open=True), {0: True, 0.999: True, 1: False}),
    (Range(values=(1, 3)), {1: True, 2: False, 3: True}),
])
def test_range_bounds_by_hand(value: Range, inside: dict[float, bool]) -> None:
    assert {v: value.contains(v) for v in inside} == inside


@pytest.mark.parametrize(("item", "key"), [
    ("train.batch_size=0", "train.batch_size"), ("train.batch_size=1", "train.batch_size"),
    ("train.batch_size=-4", "train.batch_size"), ("optim.base_lr=-1", "optim.base_lr"),
    ("optim.base_lr=0", "optim.base_lr"), ("data.image_size=0", "data.image_size"),
    ("train.workers=-1", "train.workers"), ("train.epochs=0", "train.epochs"), ("train.epochs=-1", "train.epochs"),
    ("finetune.epochs=0", "finetune.epochs"), ("finetune.batch_size=1", "finetune.batch_size"),
    ("finetune.base_lr=-0.1", "finetune.base_lr"), ("finetune.m_per_class=1", "finetune.m_per_class"),
    ("finetune.embedding_dim=-1", "finetune.embedding_dim"), ("finetune.contrastive_margin=0", "finetune.contrastive_margin"),
    ("finetune.augment.hflip=1.5", "finetune.augment.hflip"), ("augment.crop_min_scale=0", "augment.crop_min_scale"),
    ("data.test_fraction=1", "data.test_fraction"), ("data.channels=2", "data.channels"),
    ("model.proj_layers=4", "model.proj_layers"), ("optim.momentum=nan", "optim.momentum"),
    ("optim.weight_decay=-inf", "optim.weight_decay"), ("data.std=[0.5, 0, 0.5]", "data.std[]"),
    ("train.knn_t=0", "train.knn_t"),
])
def test_out_of_range_values_name_their_key(item: str, key: str) -> None:
    with pytest.raises(ToolkitError, match=rf"recipe key '{re.escape(key)}' is .*; valid: "):
        load_recipe(None, sets=[item])


def test_rules_between_keys() -> None:
    with pytest.raises(ToolkitError, match="model.backbone=convnet needs 16 or more"):
        load_recipe(None, sets=["data.image_size=8"])
    assert load_recipe(None, sets=["data.image_size=8", "model.backbone=resnet18"]).data.image_size == 8
    with pytest.raises(ToolkitError, match="'augment.crop_min_scale' \\(0.9\\) is larger"):
        load_recipe(None, sets=["augment.crop_min_scale=0.9", "augment.crop_max_scale=0.5"])


def test_overrides_of_a_loaded_recipe_are_checked() -> None:
    with pytest.raises(ToolkitError, match="'train.batch_size' is 1"):
        replace(load_recipe(None), **{"train.batch_size": 1})


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "train.batch_size=0"], "recipe key 'train.batch_size' is 0; valid: >= 2"),
    (["--set", "train.batch_size=1"], "recipe key 'train.batch_size' is 1; valid: >= 2"),
    (["--set", "train.batch_size=-4"], "recipe key 'train.batch_size' is -4"),
    (["--set", "optim.base_lr=-1"], "recipe key 'optim.base_lr' is -1.0; valid: > 0"),
    (["--set", "data.image_size=0"], "recipe key 'data.image_size' is 0"),
    (["--set", "train.workers=-1"], "recipe key 'train.workers' is -1"),
    (["--epochs", "0"], "recipe key 'train.epochs' is 0; valid: >= 1"),
    (["--epochs", "-1"], "recipe key 'train.epochs' is -1"),
    (["--nproc", "0"], "--nproc 0: must be 1 or more"),
])
def test_pretrain_refuses_bad_values_without_a_run_folder(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "run"
    line = only_line(invoke("pretrain", *args, "--out", str(out)))
    assert message in line
    assert not out.exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--epochs", "0"], "recipe key 'finetune.epochs' is 0"),
    (["--set", "finetune.base_lr=0"], "recipe key 'finetune.base_lr' is 0"),
    (["--set", "finetune.batch_size=1"], "recipe key 'finetune.batch_size' is 1"),
])
def test_finetune_refuses_bad_values_without_a_run_folder(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "run"
    line = only_line(invoke("finetune", "--init", "none", *args, "--out", str(out)))
    assert message in line
    assert not out.exists()
