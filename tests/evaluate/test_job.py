"""``toolkit evaluate``: eval.json with the documented keys, the held-out protocol, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.test_cli import invoke
from tests.tiny_runs import pretrain_at_init
from toolkit.engine.checkpoint import Checkpoint, build_training_model

FEWSHOT_KEYS = {"way", "shot", "query", "episodes", "skipped_classes", "prototype", "nearest", "support_tta"}
METRIC_KEYS = {"accuracy", "balanced_accuracy", "macro_f1", "per_class_recall"}


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return pretrain_at_init(tmp_path_factory.mktemp("evaluate"))


def test_eval_json_of_a_pretrain_checkpoint(pretrain_run: Path, tmp_path: Path) -> None:
    result = invoke("evaluate", str(pretrain_run / "checkpoint.pt"), "--out", str(tmp_path),
                    "--way", "4", "--shot", "2", "--query", "3", "--episodes", "50")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval.json").read_text())
    assert (tmp_path / "confusion.png").stat().st_size > 0 and (tmp_path / "embeddings.png").stat().st_size > 0

    fewshot = report["fewshot"]
    assert set(fewshot) == FEWSHOT_KEYS
    assert (fewshot["way"], fewshot["shot"], fewshot["query"], fewshot["episodes"]) == (4, 2, 3, 50)
    for rule in ("prototype", "nearest"):
        assert set(fewshot[rule]) == {"mean", "ci95"} and 0 <= fewshot[rule]["mean"] <= 1 and fewshot[rule]["ci95"] >= 0

    classification = report["classification"]
    assert set(classification) == METRIC_KEYS | {"rule", "knn", "knn_balanced", "prototype"}
    for rule in ("knn", "knn_balanced", "prototype"):
        assert set(classification[rule]) == METRIC_KEYS
    validation = report["protocol"]["rule_validation_balanced_accuracy"]
    assert set(validation) == {"knn", "knn_balanced", "prototype", "standard_error"}
    rules = {k: validation[k] for k in ("knn", "knn_balanced", "prototype")}
    best = max(rules, key=rules.get)
    # the best rule on validation, unless its win over the class-balanced kNN is within the standard error
    gain = rules[best] - rules["knn_balanced"]
    assert classification["rule"] == (best if best == "knn_balanced" or gain > validation["standard_error"]
                                      else "knn_balanced")
    assert {k: classification[k] for k in METRIC_KEYS} == classification[classification["rule"]]  # at the top level
    recalls = classification["per_class_recall"]
    assert sorted(recalls) == [str(d) for d in range(10)]
    assert classification["balanced_accuracy"] == pytest.approx(np.mean(list(recalls.values())))
    assert report["protocol"]["classifiers_built_from"] == "train split"

    verification = report["verification"]
    assert set(verification) == {"roc_auc", "eer", "threshold"}
    assert 0 <= verification["roc_auc"] <= 1 and 0 <= verification["eer"] <= 1 and -1 <= verification["threshold"] <= 1
    assert report["checkpoint"]["kind"] == "pretrain"
    assert "few-shot: 4-way 2-shot" in result.output and "pair verification" in result.output


def test_embedding_of_a_pretrain_checkpoint_is_the_normalised_backbone_feature(pretrain_run: Path) -> None:
    import torch

    ckpt = Checkpoint.load(pretrain_run)
    model = build_training_model(ckpt.recipe, "pretrain")
    model.load_state_dict(ckpt.weights)
    model.eval()
    x = torch.rand(4, 1, 16, 16)
    expected = model.backbone(x)
    expected = expected / expected.norm(dim=1, keepdim=True)
    assert torch.allclose(ckpt.encoder()(x), expected, atol=1e-5)


def test_held_out_classes_are_classified_from_half_of_each_test_class(tmp_path: Path) -> None:
    from toolkit.evaluate.job import EpisodeSpec, evaluate

    # Pretrained with the classes held out: evaluating them on a run that trained on them is refused
    # (tests/data/test_split_guard.py).
    run = pretrain_at_init(tmp_path, overrides={"data.holdout_classes": ["7", "8", "9"]})
    report = evaluate(run, spec=EpisodeSpec(way=3, shot=1, query=5, episodes=30), out=tmp_path, plots=False)
    assert report.protocol["classifiers_built_from"] == "first half of each evaluated class"
    assert sorted(report.classification["per_class_recall"]) == ["7", "8", "9"]
    assert report.data["evaluated_classes"] == 3
    # Half of each held-out class is the reference, the other half is scored.
    assert report.protocol["reference_images"] + report.protocol["scored_images"] == report.data["evaluated_images"]


def test_data_without_a_test_split_is_evaluated_on_its_train_split(pretrain_run: Path, tmp_path: Path) -> None:
    from toolkit.evaluate.job import EpisodeSpec, evaluate

    # Other data than the run's (its own train split was trained on: refused, tests/data/test_split_record.py).
    data = _alphabet_folder(tmp_path / "alphabets")
    report = evaluate(pretrain_run, data=str(data), spec=EpisodeSpec(way=5, shot=1, query=5, episodes=10), out=tmp_path,
                      sets=["data.test_fraction=0"], plots=False)
    # 12 images per class, 1 of them (10%) to validation
    assert report.data["evaluated_split"] == "train" and report.data["evaluated_images"] == 10 * 11
    assert report.protocol["classifiers_built_from"] == "first half of each evaluated class"


@pytest.mark.parametrize("args, message", [
    (["--way", "20"], "way=20 is larger than the 10 classes present; use way <= 10"),
    (["--shot", "5", "--query", "40"], "have shot+query = 5+40 = 45 images"),
    (["--set", "data.channels=3"], "takes 1-channel 16 px images"),
    (["--support-tta", "-1"], "--support-tta -1: the number of augmented views per support image must be an integer"),
])
def test_user_mistakes_give_one_line_and_exit_2(pretrain_run: Path, tmp_path: Path, args: list[str], message: str) -> None:
    result = invoke("evaluate", str(pretrain_run), "--out", str(tmp_path), *args)
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("error: ") and message in line, result.output
    assert not (tmp_path / "eval.json").exists()


def test_small_class_is_named(pretrain_run: Path, tmp_path: Path) -> None:
    result = invoke("evaluate", str(pretrain_run), "--out", str(tmp_path), "--shot", "5", "--query", "40")
    assert result.exit_code == 2
    assert "(class '" in result.output and "' has " in result.output  # the smallest class is named, e.g. class '0' has 12


def test_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "x.pt").write_bytes(b"junk")
    result = invoke("evaluate", str(tmp_path / "x.pt"))
    assert result.exit_code == 2 and "not a readable toolkit checkpoint" in result.output


def _alphabet_folder(root: Path) -> Path:
    """Digits saved as PNGs under two "alphabets": G1/{0..4} and G2/{5..9}, 12 images each."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for label in range(10):
        folder = root / ("G1" if label < 5 else "G2") / str(label)
        folder.mkdir(parents=True)
        for i, image in enumerate(digits.images[digits.target == label][:12]):
            Image.fromarray((image * 255 / 16).astype(np.uint8)).save(folder / f"{i}.png")
    return root


def test_within_group_episodes_in_eval_json(pretrain_run: Path, tmp_path: Path) -> None:
    from toolkit.evaluate.job import EpisodeSpec, evaluate

    data = _alphabet_folder(tmp_path / "alphabets")
    report = evaluate(pretrain_run, data=str(data), spec=EpisodeSpec(way=4, shot=1, query=3, episodes=20, within_group=True),
                      out=tmp_path, sets=["data.test_fraction=0"], plots=False)
    within = report.fewshot["within_group"]
    assert set(report.fewshot) == FEWSHOT_KEYS | {"within_group"}
    for rule in ("prototype", "nearest"):
        assert set(within[rule]) == set(report.fewshot[rule]) == {"mean", "ci95"}
    assert within["groups"] == ["G1", "G2"] and within["skipped_groups"] == []


def test_within_group_without_a_large_enough_group_is_one_line(pretrain_run: Path, tmp_path: Path) -> None:
    result = invoke("evaluate", str(pretrain_run), "--out", str(tmp_path), "--query", "5", "--within-group")  # digits: one class per group
    assert result.exit_code == 2, result.output
    assert "error: --within-group: no group has 5 classes (the largest has 1)" in result.output
    assert not (tmp_path / "eval.json").exists()


def test_support_tta_changes_only_the_supports_of_the_episodes(pretrain_run: Path, tmp_path: Path) -> None:
    from toolkit.evaluate.job import EpisodeSpec, evaluate

    def run(name: str, views: int | None, sets: tuple[str, ...] = ()):
        spec = EpisodeSpec(way=5, shot=1, query=5, episodes=100, within_group=False, support_tta=views)
        return evaluate(pretrain_run, spec=spec, out=tmp_path / name, sets=list(sets), plots=False)

    plain, default, views, from_recipe = (run("plain", 0), run("default", None), run("views", 4),
                                          run("recipe", None, ("finetune.support_tta=4",)))
    assert plain.fewshot["support_tta"] == default.fewshot["support_tta"] == 0
    assert plain.fewshot == default.fewshot  # the checkpoint's recipe leaves it off
    assert views.fewshot["support_tta"] == from_recipe.fewshot["support_tta"] == 4
    assert views.fewshot == from_recipe.fewshot  # --support-tta N is finetune.support_tta = N
    assert views.fewshot["prototype"] != plain.fewshot["prototype"]  # the supports moved
    # queries, classifiers and pairs do not use the views; the unknown threshold is calibrated on prototypes as scored
    assert views.classification == plain.classification and views.verification == plain.verification
    assert views.calibration.threshold_eer == plain.calibration.threshold_eer
    assert views.calibration.unknown_threshold != plain.calibration.unknown_threshold
