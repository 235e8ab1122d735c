"""Splits belong to the model: evaluate, finetune --init and the default init refuse trained-on test images;
pretraining's kNN monitor reads the validation split."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.test_cli import invoke
from tests.tiny_runs import pretrain_at_init, tiny_recipe
from toolkit.config import load_recipe
from toolkit.data.sources import load_splits
from toolkit.engine.checkpoint import Checkpoint
from toolkit.errors import ToolkitError

HOLDOUT = {"data.holdout_classes": ["7", "8", "9"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("split_guard")
    fp32 = {"train.precision": "fp32"}  # the monitor's value is recomputed below without autocast
    return {"all": pretrain_at_init(root, seed=7, overrides=fp32, name="all"),
            "holdout": pretrain_at_init(root, seed=7, overrides={**fp32, **HOLDOUT}, name="holdout")}


def _seen(finetune_data, pretrain_data) -> int:  # noqa: ANN001 - DataConfig
    """Brute force: test paths of the fine-tuning split that the pretraining split trained or validated on."""
    ft, pre = load_splits(finetune_data), load_splits(pretrain_data)
    return len(set(ft.test.paths) & (set(pre.train.paths) | set(pre.val.paths)))


def test_evaluate_on_another_split_seed_is_one_line(runs: dict[str, Path], tmp_path: Path) -> None:
    result = invoke("evaluate", str(runs["all"]), "--out", str(tmp_path), "--set", "data.split_seed=1")
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: ") and "test images were in its train or validation split" in line
    assert "data.split_seed is 1 here but 0 in" in line and not (tmp_path / "eval.json").exists()


def test_finetune_on_held_out_classes_seen_in_pretraining_needs_the_flag(runs: dict[str, Path], tmp_path: Path) -> None:
    from toolkit.evaluate.job import EpisodeSpec, evaluate
    from toolkit.finetune import finetune

    recipe = tiny_recipe(tmp_path)
    result = invoke("finetune", str(recipe), "--init", str(runs["all"]), "--out", str(tmp_path / "refused"),
                    "--set", 'data.holdout_classes=["7","8","9"]')
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert "data.holdout_classes is ['7', '8', '9'] here but [] in" in line and "--allow-seen-pretraining" in line

    ft = load_recipe(str(recipe), {**HOLDOUT, "finetune.init": str(runs["all"]), "finetune.epochs": 1})
    seen = _seen(ft.data, Checkpoint.load(runs["all"]).recipe.data)
    assert seen > 20  # train_limit and test_limit make the tiny splits small
    finetune(ft, tmp_path / "ft", allow_seen_pretraining=True)
    split = Checkpoint.load(tmp_path / "ft").split
    assert split is not None and split.allow_seen_pretraining and split.seen_in_pretraining == seen
    report = evaluate(tmp_path / "ft", spec=EpisodeSpec(way=3, shot=1, query=3, episodes=10), plots=False)
    assert report.protocol["allow_seen_pretraining"] is True
    assert report.protocol["test_images_seen_in_pretraining"] == seen
    assert json.loads((tmp_path / "ft" / "eval.json").read_text())["protocol"]["allow_seen_pretraining"] is True


def test_fewer_classes_from_a_pretraining_on_all_of_them_is_fine(runs: dict[str, Path], tmp_path: Path) -> None:
    from toolkit.finetune_init import resolve_init

    recipe = load_recipe(str(tiny_recipe(tmp_path)), {"data.classes": ["2", "3", "5", "7", "8", "9"],
                                                       "finetune.init": str(runs["all"])})
    assert _seen(recipe.data, Checkpoint.load(runs["all"]).recipe.data) == 0
    adopted, ckpt = resolve_init(recipe)
    assert ckpt is not None and adopted.finetune.init == str((runs["all"] / "checkpoint.pt").resolve())


def test_default_init_skips_a_run_whose_split_holds_the_test_images(runs: dict[str, Path], tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from toolkit.finetune_init import latest_pretrain_checkpoint, resolve_init

    monkeypatch.chdir(tmp_path)
    for name, mtime in (("holdout", 1_000), ("all", 2_000)):  # the run on all classes is the newest
        shutil.copytree(runs[name], tmp_path / "runs" / name)
        os.utime(tmp_path / "runs" / name / "checkpoint.pt", (mtime, mtime))
    recipe = load_recipe(str(tiny_recipe(tmp_path)), HOLDOUT)
    adopted, ckpt = resolve_init(recipe)
    err = capsys.readouterr().err
    assert ckpt is not None and ckpt.path == Path("runs/holdout/checkpoint.pt")
    assert "init: not runs/all/checkpoint.pt:" in err and "data.holdout_classes" in err
    assert "init: backbone of runs/holdout/checkpoint.pt" in err and "picked as the newest pretrain run" in err

    shutil.rmtree(tmp_path / "runs" / "holdout")
    assert resolve_init(recipe)[1] is None  # no compatible run: random weights, said so
    assert "init: random weights" in capsys.readouterr().err
    from toolkit.data.split_record import record_of

    assert latest_pretrain_checkpoint(Path("runs"), recipe.data, record_of(recipe.data), allow_seen=True) == \
        Path("runs/all/checkpoint.pt")
    with pytest.raises(ToolkitError, match="--allow-seen-pretraining"):
        resolve_init(load_recipe(str(tiny_recipe(tmp_path)), {**HOLDOUT, "finetune.init": "runs/all"}))


def _monitor_value(run: Path, split: str) -> float:
    """kNN top-1 of the run's epoch-0 features: train split as the bank, ``split`` as the queries."""
    import torch

    from toolkit.data.preprocess import Normalizer
    from toolkit.data.store import load_data
    from toolkit.engine.embed import embed_store
    from toolkit.metrics.knn_monitor import knn_top1

    ckpt = Checkpoint.load(run)
    recipe = ckpt.recipe
    data = load_data(recipe.data)
    model = ckpt.training_model().eval()
    pre = ckpt.preprocessing
    normalizer = Normalizer(list(pre.mean), list(pre.std), torch.device("cpu"))
    queries = data.val if split == "val" else data.test
    with torch.no_grad():
        bank, emb = (embed_store(model.backbone, s, normalizer, recipe.data.image_size) for s in (data.train, queries))
    return knn_top1(bank, data.train.labels, emb, queries.labels, k=recipe.train.knn_k, temperature=recipe.train.knn_t)


def test_pretraining_monitor_reads_validation_when_the_bank_has_its_classes(runs: dict[str, Path]) -> None:
    first = json.loads((runs["all"] / "metrics.jsonl").read_text().splitlines()[0])
    assert first["knn_split"] == "val"
    on_val, on_test = _monitor_value(runs["all"], "val"), _monitor_value(runs["all"], "test")
    assert on_val != on_test and first["knn_top1"] == pytest.approx(on_val, abs=1e-6)
    # Held-out classes: validation classes are not in the bank, so the monitor reads the test split.
    held = json.loads((runs["holdout"] / "metrics.jsonl").read_text().splitlines()[0])
    assert held["knn_split"] == "test"
    assert np.isfinite(held["knn_top1"])


def test_study_refuses_to_reuse_a_run_on_other_files(tmp_path: Path) -> None:
    """Same settings, one image added to the folder: the finished variant was trained on another split."""
    from tests.conftest import shape_image, write_image
    from tests.helpers import write_tiny_recipe
    from toolkit.study.job import run_study

    rng = np.random.default_rng(0)
    for label in range(4):
        for i in range(12):
            write_image(tmp_path / "data" / f"k{label}" / f"{i}.png", shape_image(label, rng, size=16))
    recipe = load_recipe(str(write_tiny_recipe(tmp_path, '[study]\nvariants = ["baseline"]\n')), sets=[
        f"data.path={tmp_path / 'data'}", "train.epochs=1", "train.batch_size=8", "train.precision=fp32",
        "data.train_limit=0", "data.test_limit=0"])
    run_study(recipe, tmp_path / "out")
    run_study(recipe, tmp_path / "out")  # unchanged: the finished run is reused
    write_image(tmp_path / "data" / "k0" / "new.png", shape_image(0, rng, size=16))
    with pytest.raises(ToolkitError, match=r"paths differ from .*baseline's .the files under data.path changed"):
        run_study(recipe, tmp_path / "out")
