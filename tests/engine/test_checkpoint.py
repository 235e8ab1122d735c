"""``Checkpoint``: the version-2 layout round-trips, version-1 files (written the old way) still load,
and anything else is a one-line error without unpickling code."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.tiny_models import MEAN, STD, TINY, make_checkpoint
from toolkit.config import load_recipe, recipe_to_dict
from toolkit.engine.checkpoint import FORMAT, FORMAT_VERSION, Checkpoint, build_training_model
from toolkit.errors import ToolkitError


def write_v1(path: Path, kind: str = "pretrain", load_size: int = 20) -> dict:
    """A checkpoint exactly as toolkit wrote it before format 2: one flat dict, torch.save'd."""
    recipe = load_recipe(None, {**TINY, "data.load_size": load_size})
    torch.manual_seed(1)
    model = build_training_model(recipe, kind)
    payload = {
        "format": "toolkit-checkpoint", "format_version": 1, "kind": kind, "toolkit_version": "0.1.0",
        "recipe": recipe_to_dict(recipe), "model": model.state_dict(),
        "preprocess": {"image_size": 16, "channels": 3, "mean": MEAN, "std": STD},
        "embedding_dim": 12 if kind == "finetune" else 8, "class_names": ["a", "b"], "optimizer": {}, "scaler": None,
        "epoch": 4, "step_in_epoch": 2, "partial": {"sums": {"loss": -1.5}, "seconds": 1.0, "images": 64},
        "rng": {}, "data_source": "digits", "skipped_images": [],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return payload


@pytest.mark.parametrize("kind", ["pretrain", "finetune"])
def test_version_1_checkpoints_still_load(tmp_path: Path, kind: str) -> None:
    old = write_v1(tmp_path / "run" / "checkpoint.pt", kind)
    ckpt = Checkpoint.load(tmp_path / "run")
    assert (ckpt.kind, ckpt.format_version, ckpt.epoch, ckpt.embedding_dim) == (kind, 1, 4, old["embedding_dim"])
    assert ckpt.training.step_in_epoch == 2 and ckpt.training.partial == old["partial"]
    assert ckpt.class_names == ["a", "b"] and ckpt.data_source == "digits" and ckpt.skipped_images == 0
    pre = ckpt.preprocessing
    assert (pre.image_size, pre.channels, pre.mean, pre.std) == (16, 3, tuple(MEAN), tuple(STD))
    assert pre.resize_size == 20  # version 1 had no resize_size: the rule max(load_size, image_size)
    assert all(torch.equal(ckpt.weights[k], v) for k, v in old["model"].items())
    model = build_training_model(load_recipe(None, {**TINY, "data.load_size": 20}), kind)
    model.load_state_dict(old["model"])
    model.eval()
    x = torch.randn(3, 3, 16, 16)
    expected = torch.nn.functional.normalize((model.backbone(x) if kind == "pretrain" else model(x)).float(), dim=1)
    assert torch.allclose(ckpt.encoder()(x), expected, atol=1e-6)


def test_saving_writes_version_3_and_round_trips(tmp_path: Path) -> None:
    write_v1(tmp_path / "old.pt")
    ckpt = Checkpoint.load(tmp_path / "old.pt")
    ckpt.save(tmp_path / "new.pt")
    raw = torch.load(tmp_path / "new.pt", weights_only=True)
    assert raw["format"] == FORMAT and raw["format_version"] == FORMAT_VERSION == 3
    assert raw["data"]["split"] is None  # a version-1 file records no split
    assert raw["preprocessing"]["resize_size"] == 20 and raw["training"]["epoch"] == 4
    again = Checkpoint.load(tmp_path / "new.pt")
    assert again.split is None and again.format_version == 3
    assert again.preprocessing == ckpt.preprocessing and again.training.partial == ckpt.training.partial
    assert all(torch.equal(again.weights[k], v) for k, v in ckpt.weights.items())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_resize_rule_matches_the_training_decode(tmp_path: Path) -> None:
    ckpt = Checkpoint.load(make_checkpoint(tmp_path / "a", load_size=24))
    assert ckpt.preprocessing.resize_size == 24
    assert Checkpoint.load(make_checkpoint(tmp_path / "b", load_size=8)).preprocessing.resize_size == 16  # never below the input


class Boom:
    def __reduce__(self):  # noqa: ANN204 - what a malicious pickle does
        return (os.system, ("touch pwned",))


@pytest.mark.parametrize("content, message", [
    (None, "not a readable toolkit checkpoint (UnpicklingError)"),
    (b"not a checkpoint", "not a readable toolkit checkpoint"),
    ({"weights": {}}, "not a toolkit checkpoint (no 'toolkit-checkpoint' marker)"),
    ({"format": FORMAT, "format_version": 9, "kind": "pretrain"}, "checkpoint format 9 is newer than this toolkit"),
    ({"format": FORMAT, "kind": "classifier"}, "not a toolkit checkpoint (kind 'classifier')"),
    ({"format": FORMAT, "format_version": 2, "kind": "pretrain", "preprocessing": {"image_size": 16}}, "broken toolkit checkpoint"),
])
def test_anything_else_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: object, message: str) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "bad.pt"
    if content is None:
        with open(path, "wb") as handle:
            torch.save({"format": FORMAT, "evil": Boom()}, handle)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)
    with pytest.raises(ToolkitError) as info:
        Checkpoint.load(path)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "pwned").exists()
