"""benchmarks/longtail.py: the seed summary and the paired difference, against hand-computed values."""

from __future__ import annotations

import math

import pytest

from benchmarks.longtail import summarise


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
