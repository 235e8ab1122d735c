"""Recipe loading: typed keys, overrides, and one-line errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from toolkit.config import RECIPES_DIR, load_recipe, parse_set, recipe_from_dict, recipe_to_dict, with_sets
from toolkit.errors import ToolkitError


def test_defaults_are_digits() -> None:
    recipe = load_recipe(None)
    assert recipe.name == "digits"
    assert recipe.data.path == "digits"


@pytest.mark.parametrize("path", sorted(RECIPES_DIR.glob("*.toml")), ids=lambda p: p.stem)
def test_every_shipped_recipe_loads(path: Path) -> None:
    recipe = load_recipe(str(path))
    assert recipe.name == path.stem
    assert recipe_from_dict(recipe_to_dict(recipe)) == recipe  # round trip through the stored form


def test_cifar_recipe_matches_paper_appendix_d() -> None:
    r = load_recipe("cifar10_resnet18")
    assert (r.model.backbone, r.model.cifar_stem, r.model.proj_layers, r.model.dim) == ("resnet18", True, 2, 2048)
    assert (r.optim.base_lr, r.optim.weight_decay, r.train.batch_size, r.train.epochs) == (0.03, 5e-4, 512, 800)
    assert r.augment.blur_p == 0.0


def test_imagenet_recipe_matches_paper_main_setting() -> None:
    r = load_recipe("imagenet_resnet50")
    assert (r.model.backbone, r.model.proj_layers, r.model.dim, r.model.pred_hidden) == ("resnet50", 3, 2048, 512)
    assert (r.optim.base_lr, r.optim.weight_decay, r.optim.fix_pred_lr) == (0.05, 1e-4, True)
    assert (r.train.batch_size, r.train.epochs, r.augment.blur_p) == (512, 100, 0.5)


def test_shortcuts_and_sets_override_typed_values() -> None:
    r = load_recipe(None, {"train.epochs": 3, "data.path": "x"},
                    ["model.backbone=resnet18", "optim.base_lr=0.2", "data.classes=[\"a/*\", \"b\"]",
                     "finetune.augment.hflip=0.25", "model.stop_gradient=false"])
    assert (r.train.epochs, r.data.path, r.model.backbone, r.optim.base_lr) == (3, "x", "resnet18", 0.2)
    assert r.data.classes == ("a/*", "b")
    assert r.finetune.augment.hflip == 0.25
    assert r.model.stop_gradient is False


def test_int_is_accepted_for_float_but_not_the_reverse() -> None:
    assert load_recipe(None, sets=["optim.base_lr=1"]).optim.base_lr == 1.0
    with pytest.raises(ToolkitError, match="'train.epochs' must be int"):
        load_recipe(None, sets=["train.epochs=2.5"])


@pytest.mark.parametrize("item, message", [
    ("train.nope=1", "unknown recipe key 'train.nope'"),
    ("nosection.key=1", "unknown recipe key 'nosection'"),
    ("model.stop_gradient=1", "'model.stop_gradient' must be bool"),
    ("model.backbone=vgg16", "'model.backbone' is 'vgg16'; valid: convnet, resnet18"),
    ("model.predictor=big", "'model.predictor' is 'big'"),
    ("train.batch_size=true", "'train.batch_size' must be int"),
])
def test_bad_keys_and_types_name_the_key(item: str, message: str) -> None:
    with pytest.raises(ToolkitError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        load_recipe(None, sets=[item])
    assert "\n" not in str(info.value)


def test_bad_recipe_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\nepochs = 'ten'\n")
    with pytest.raises(ToolkitError, match=r"bad.toml: recipe key 'train.epochs' must be int"):
        load_recipe(str(bad))
    broken = tmp_path / "broken.toml"
    broken.write_text("[train\n")
    with pytest.raises(ToolkitError, match="not valid TOML"):
        load_recipe(str(broken))
    with pytest.raises(ToolkitError, match="recipe 'missing' not found"):
        load_recipe("missing")


def test_parse_set_reads_toml_or_plain_strings() -> None:
    assert parse_set("a.b=3") == ("a.b", 3)
    assert parse_set("a.b=resnet18") == ("a.b", "resnet18")
    assert parse_set("a.b=[1, 2]") == ("a.b", [1, 2])
    with pytest.raises(ToolkitError, match="section.key=value"):
        parse_set("novalue")
    with pytest.raises(ToolkitError, match="must be section.key"):
        parse_set("epochs=3")


def test_with_sets_on_loaded_recipe() -> None:
    r = with_sets(load_recipe(None), ["train.workers=0"])
    assert r.train.workers == 0
