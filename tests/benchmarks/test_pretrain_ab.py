"""``benchmarks/pretrain_throughput.py --mode ab`` at a tiny size: whole step against bare step, alternating."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import write_tiny_recipe

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import pretrain_ab  # noqa: E402
import pretrain_throughput  # noqa: E402


@pytest.mark.parametrize("batch_augment, workers", [(False, 1), (True, 0)])
def test_ab_mode_alternates_rounds_and_saves_the_ratio(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       batch_augment: bool, workers: int) -> None:
    recipe = write_tiny_recipe(tmp_path)
    saved = tmp_path / "ab.json"
    saved.write_text(json.dumps({"earlier": {"a_over_b": 0.5}}))
    pretrain_throughput.main(["--mode", "ab", "--recipe", str(recipe), "--steps", "2", "--rounds", "3", "--warmup", "1",
                              "--set", f"data.batch_augment={str(batch_augment).lower()}", "--set", f"train.workers={workers}",
                              "--save", str(saved),
                              "--label", "tiny", "--note", "1 thread"])
    printed = json.loads(capsys.readouterr().out)
    report = json.loads(saved.read_text())
    assert report["earlier"] == {"a_over_b": 0.5} and report["tiny"] == printed  # added beside earlier measurements
    assert printed["batch_augment"] is batch_augment and printed["batch"] == 32 and printed["image_size"] == 16
    assert printed["note"] == "1 thread" and printed["torch_threads"] == torch.get_num_threads()
    assert printed["workers"] == workers and (printed["worker_fetch_cpu_ms_per_batch"] > 0) == (workers > 0)
    for clock in ("wall", "cpu"):
        assert [len(printed["rounds"][clock][k]) for k in ("a", "b")] == [3, 3]
    a, b = printed["a_whole_img_per_s"], printed["b_bare_img_per_s"]
    assert a > 0 and b > 0 and printed["a_over_b"] == pytest.approx(a / b, rel=0.01)
    assert printed["a_over_b_cpu"] == pytest.approx(printed["a_whole_img_per_cpu_s"] / printed["b_bare_img_per_cpu_s"], rel=0.01)


def test_whole_and_bare_steps_train_the_same_model_on_inputs_of_the_same_shapes(tmp_path: Path) -> None:
    recipe, objective, trainer = pretrain_ab.build_trainer(str(write_tiny_recipe(tmp_path)), {"train.device": "cpu"},
                                                           ["data.batch_augment=true"])
    whole, bare, drain, prefetched = pretrain_ab.ab_steps(trainer, objective)
    assert prefetched == 0  # the tiny recipe loads in the training process
    x1, x2 = objective.inputs(next(pretrain_ab.endless(trainer, objective)), trainer.normalizer)
    assert x1.shape == x2.shape == (32, 1, 16, 16) and x1.dtype == torch.float32
    for step in (whole, bare):
        before = [p.detach().clone() for p in trainer.module.parameters()]
        step()
        assert any(not torch.equal(p, q) for p, q in zip(before, trainer.module.parameters()))  # one optimizer step each
