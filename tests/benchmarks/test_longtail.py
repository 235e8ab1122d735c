"""benchmarks/longtail.py: the seed summary and the paired difference, against hand-computed values."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from benchmarks.longtail import summarise
from toolkit.engine.run_folder import RunFolder


def _row(seed: int, pipeline: float, supervised: float) -> dict:
    rules = {"knn": pipeline - 0.05, "knn_balanced": pipeline, "prototype": pipeline - 0.01}
    return {"seed": seed, "pipeline": {"balanced_accuracy": pipeline, "chosen_rule": "knn_balanced", **rules},
            "supervised": {"balanced_accuracy": supervised}}


def test_the_difference_is_paired_by_seed() -> None:
    # Seeds differ a lot in difficulty but the pipeline is 2 points ahead on each: the paired
    # difference has no spread, the unpaired means a large one.
    rows = [_row(0, 0.92, 0.90), _row(1, 0.72, 0.70), _row(2, 0.82, 0.80)]
    s = summarise(rows)
    assert s["pipeline_minus_supervised"]["mean"] == pytest.approx(0.02)
    assert s["pipeline_minus_supervised"]["standard_error"] == pytest.approx(0.0, abs=1e-12)
    assert s["balanced_accuracy"]["mean"] == pytest.approx(0.82)
    assert s["balanced_accuracy"]["standard_error"] == pytest.approx(0.1 / math.sqrt(3))  # sample sd 0.1
    assert s["knn"]["mean"] == pytest.approx(0.77)
    assert s["target_met"] is True


def test_the_target_needs_one_point_on_average() -> None:
    s = summarise([_row(0, 0.905, 0.90), _row(1, 0.70, 0.70)])
    assert s["pipeline_minus_supervised"]["mean"] == pytest.approx(0.0025)
    assert s["pipeline_minus_supervised"]["standard_error"] == pytest.approx(0.0025)  # sample sd 0.005/sqrt(2), over sqrt(2) seeds
    assert s["target_met"] is False
    single = summarise([_row(0, 0.95, 0.90)])
    assert math.isnan(single["supervised"]["standard_error"])  # one seed: no interval, not a zero one


def _fake_stages(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``run_cli`` recorded instead of run (1 CPU second each) and a fixed classification read back."""
    import types

    import benchmarks.longtail as longtail
    from toolkit.evaluate import report

    commands: list[str] = []

    def fake_run_cli(args: list[str], log: Path) -> float:
        commands.append(args[0])
        return 1.0

    classification = {"rule": "knn_balanced", "balanced_accuracy": 0.9,
                      **{rule: {"balanced_accuracy": 0.9} for rule in longtail.RULES}}
    monkeypatch.setattr(longtail, "run_cli", fake_run_cli)
    monkeypatch.setattr(report.EvalReport, "read", staticmethod(lambda path: types.SimpleNamespace(classification=classification)))
    return commands


def _args(**overrides: object) -> argparse.Namespace:
    base = {"data": "digits", "imbalance": 100.0, "pretrain": "digits", "finetune": "digits_lt", "pretrain_epochs": None,
            "pretrain_set": [], "finetune_set": [], "refit": False}
    return argparse.Namespace(**{**base, **overrides})


def test_a_finished_pretraining_run_is_reused_with_its_recorded_cpu_seconds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks.longtail import pipeline

    commands = _fake_stages(monkeypatch)
    (tmp_path / "seed0" / "pretrain").mkdir(parents=True)
    (tmp_path / "seed0" / "pretrain" / RunFolder.CHECKPOINT).write_bytes(b"")
    (tmp_path / "seed0" / "cpu_seconds.json").write_text(json.dumps({"pretrain": 875.5}))
    result = pipeline(_args(), 0, tmp_path)
    assert commands == ["finetune", "evaluate"]
    assert result["cpu_seconds"] == {"pretrain": 875.5, "finetune": 1.0, "evaluate": 1.0}


def test_a_pretraining_run_without_recorded_seconds_runs_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A checkpoint alone may be a killed run's: only the recorded seconds (written when it finished) mark it done."""
    from benchmarks.longtail import pipeline

    commands = _fake_stages(monkeypatch)
    (tmp_path / "seed0" / "pretrain").mkdir(parents=True)
    (tmp_path / "seed0" / "pretrain" / RunFolder.CHECKPOINT).write_bytes(b"")
    result = pipeline(_args(), 0, tmp_path)
    assert commands == ["pretrain", "finetune", "evaluate"]
    assert result["cpu_seconds"]["pretrain"] == 1.0
    assert json.loads((tmp_path / "seed0" / "cpu_seconds.json").read_text())["pretrain"] == 1.0
