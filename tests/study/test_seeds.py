"""``toolkit study --seeds N``: t-intervals and the decision rule against hand-computed numbers, and the runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.study.test_study import tiny
from toolkit.engine import checkpoint
from toolkit.study.job import run_study
from toolkit.study.seeds import decide, interval_sign, t_interval

# Student t quantiles t(0.975, df) from printed tables (e.g. NIST/SEMATECH e-Handbook, Table 1.3.6.7.2).
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776}


@pytest.mark.parametrize("values", [[0.05, 0.07, 0.06], [0.01, 0.05, -0.01], [0.70, 0.74], [0.3, 0.31, 0.35, 0.29, 0.3]])
def test_t_interval_equals_the_textbook_formula(values: list[float]) -> None:
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    got_mean, half = t_interval(values)
    assert got_mean == pytest.approx(mean)
    assert half == pytest.approx(T975[n - 1] * sd / math.sqrt(n), rel=1e-3)


def test_hand_computed_intervals_decide_or_not() -> None:
    # [0.05, 0.07, 0.06]: mean 0.06, s 0.01, h = 4.303 x 0.01 / sqrt(3) = 0.0248 -> [0.035, 0.085], above 0.
    assert interval_sign([0.05, 0.07, 0.06]) == 1
    # [0.01, 0.05, -0.01]: mean 0.0167, s 0.0306, h = 4.303 x 0.0306 / sqrt(3) = 0.0760 -> [-0.059, 0.093] holds 0.
    assert interval_sign([0.01, 0.05, -0.01]) == 0
    # [-0.04, -0.05]: mean -0.045, s 0.00707, h = 12.706 x 0.00707 / sqrt(2) = 0.0635 -> [-0.109, 0.019] holds 0.
    assert interval_sign([-0.04, -0.05]) == 0
    # [-0.04, -0.05, -0.045]: mean -0.045, s 0.005, h = 4.303 x 0.005 / sqrt(3) = 0.0124 -> below 0.
    assert interval_sign([-0.04, -0.05, -0.045]) == -1
    assert t_interval([0.5]) == (0.5, None) and interval_sign([0.5]) == 0  # one seed: no interval


def test_decision_rule() -> None:
    assert decide([True, True, True], None) == "agrees"  # e.g. collapse in every seed: no interval needed
    assert decide([False], None) == "differs"
    assert decide([True, False, True], None) == "inconclusive"  # the seeds disagree
    assert decide([True, True, True], [0.05, 0.07, 0.06]) == "agrees"  # interval above 0: "trains" is decided
    assert decide([True, True, True], [0.01, 0.05, 0.002]) == "inconclusive"  # interval holds 0
    assert decide([False, False, False], [-0.04, -0.05, -0.045]) == "differs"  # interval below 0: "fails to learn"
    assert decide([True], [0.2]) == "inconclusive"  # a kNN-margin verdict from one seed
    assert decide([None, None], None) == "-"


def test_study_with_two_seeds_runs_each_variant_twice(tmp_path: Path) -> None:
    run_study(tiny(tmp_path, "study.seeds=2"), tmp_path / "out")
    data = json.loads((tmp_path / "out" / "study.json").read_text())
    assert data["seeds"] == 2 and "t-interval" in data["interval"]
    by = {v["name"]: v for v in data["variants"]}
    for name in ("baseline", "no_stop_gradient"):
        assert [s["run_dir"] for s in by[name]["seed_runs"]] == [f"{name}-seed1"]
        assert (tmp_path / "out" / f"{name}-seed1" / "checkpoint.pt").is_file()
        assert checkpoint.load(tmp_path / "out" / f"{name}-seed1").recipe.train.seed == 1
        knn = [by[name]["final"]["knn_top1"], by[name]["seed_runs"][0]["final_knn_top1"]]
        mean, half = t_interval(knn)
        assert by[name]["knn_over_seeds"] == {"mean": pytest.approx(mean), "ci95": pytest.approx(half), "runs": 2}
    assert "train.seed 0 to 1" in (tmp_path / "out" / "report.md").read_text()
    # no_stop_gradient collapses with both seeds: a collapse verdict needs no interval.
    assert by["no_stop_gradient"]["decision"] == ("agrees" if all(
        s["agrees"] for s in [by["no_stop_gradient"], *by["no_stop_gradient"]["seed_runs"]]) else "inconclusive")
