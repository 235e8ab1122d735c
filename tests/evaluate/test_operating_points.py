"""TAR@FAR and the thresholds carry their uncertainty: the pairs behind them, a bootstrap interval, or a refusal."""

from __future__ import annotations

import io

import numpy as np
from rich.console import Console

from toolkit.evaluate.calibration import (MIN_IMPOSTORS_AT_FAR, THRESHOLD_BOOTSTRAP, calibrate, eer_threshold,
                                          far_refusal, far_threshold, pair_operating_points, threshold_intervals)
from toolkit.evaluate.report import Calibration
from toolkit.evaluate.tables import calibration_table
from toolkit.metrics.verification import verification_metrics


def _clusters(classes: int, per_class: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(classes), per_class)
    emb = np.eye(classes, 16)[labels] + rng.normal(scale=noise, size=(len(labels), 16))
    return emb / np.linalg.norm(emb, axis=1, keepdims=True), labels


def test_eer_threshold_equals_the_roc_curve_one_on_tied_scores() -> None:
    rng = np.random.default_rng(0)
    for _ in range(500):
        n = int(rng.integers(2, 80))
        scores, same = np.round(rng.random(n), int(rng.integers(1, 3))), rng.random(n) < 0.5
        if same.all() or not same.any():
            continue
        assert eer_threshold(scores, same) == verification_metrics(scores, same)["threshold"]


def test_threshold_intervals_equal_a_brute_force_bootstrap() -> None:
    rng = np.random.default_rng(1)
    scores = np.r_[rng.normal(0.6, 0.15, 300), rng.normal(0.1, 0.15, 20000)]
    same = np.r_[np.ones(300, bool), np.zeros(20000, bool)]
    eer_ci, far_ci = threshold_intervals(scores, same, 0.01, seed=7, rounds=50)
    draw = np.random.default_rng(7)  # the same resamples, judged by sklearn's ROC curve
    eer, at_far = [], []
    for _ in range(50):
        resampled = np.r_[draw.choice(scores[same], 300), draw.choice(scores[~same], 20000)]
        eer.append(verification_metrics(resampled, same)["threshold"])
        at_far.append(far_threshold(resampled, same, 0.01))
    np.testing.assert_allclose(eer_ci, np.percentile(eer, [2.5, 97.5]))
    np.testing.assert_allclose(far_ci, np.percentile(at_far, [2.5, 97.5]))


def test_a_far_point_needs_100_impostor_pairs_at_that_far() -> None:
    assert far_refusal(1e-3, 100_000) is None
    assert "99999 impostor pairs give 99 at FAR 0.001; at least 100" in far_refusal(1e-3, 99_999)
    assert far_refusal(0.01, 100 * MIN_IMPOSTORS_AT_FAR) is None


def test_tar_at_far_is_refused_on_too_few_impostor_pairs() -> None:
    emb, labels = _clusters(6, 30, 0.5, seed=2)
    cal = calibrate(emb, labels, "val", way=3, shot=1, query=3, episodes=20, pairs=20000, seed=0, far=1e-3)
    assert cal.threshold_far is None and cal.threshold_far_ci95 is None
    assert cal.threshold_far_refused is not None and "10000 impostor pairs give 10 at FAR 0.001" in cal.threshold_far_refused
    points = pair_operating_points(emb, labels, cal, 20000, seed=1, far=1e-3)["threshold_far"]
    assert points["tar"] is None and points["refused"] == cal.threshold_far_refused
    assert points["impostor_pairs"] == 10000


def test_tar_at_far_has_its_pairs_and_a_bootstrap_interval() -> None:
    emb, labels = _clusters(6, 30, 0.6, seed=3)
    cal = calibrate(emb, labels, "val", way=3, shot=1, query=3, episodes=20, pairs=20000, seed=0, far=0.02)
    assert cal.impostor_pairs == 10000 and cal.genuine_pairs == 10000
    assert cal.threshold_far is not None and cal.threshold_far_ci95 is not None and cal.threshold_eer_ci95 is not None
    low, high = cal.threshold_far_ci95
    assert low <= cal.threshold_far <= high and cal.threshold_eer_ci95[0] <= cal.threshold_eer
    point = pair_operating_points(emb, labels, cal, 20000, seed=1, far=0.02)["threshold_far"]
    assert point["refused"] is None and point["impostor_pairs"] == 10000
    # the reference: a resampling loop over the genuine pairs' accept decisions
    accepted = np.random.default_rng(5).random(point["genuine_pairs"]) < point["tar"]
    draw = np.random.default_rng(6)
    loop = [accepted[draw.integers(0, len(accepted), len(accepted))].mean() for _ in range(2000)]
    np.testing.assert_allclose(point["tar_ci95"], np.percentile(loop, [2.5, 97.5]), atol=0.004)
    assert point["tar_ci95"][0] < point["tar"] < point["tar_ci95"][1]


def _render(cal: Calibration, points: dict) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=400).print(calibration_table(cal, points, "test", None))
    return " ".join(buffer.getvalue().split())  # the title wraps at the table's width


def test_the_table_prints_pairs_intervals_and_refusals() -> None:
    emb, labels = _clusters(6, 30, 0.6, seed=3)
    for far in (0.02, 1e-3):
        cal = calibrate(emb, labels, "val", way=3, shot=1, query=3, episodes=20, pairs=20000, seed=0, far=far)
        points = pair_operating_points(emb, labels, cal, 20000, seed=1, far=far)
        text = _render(cal, points)
        assert "(10000 genuine + 10000 impostor pairs)" in text and "[95% bootstrap interval]" in text
        assert cal.threshold_eer_ci95 is not None
        lo, hi = cal.threshold_eer_ci95
        assert f"{cal.threshold_eer:.4f} [{lo:.4f}, {hi:.4f}]" in text
        if far == 0.02:
            assert "on 10000 impostor pairs" in text and f"TAR {100 * points['threshold_far']['tar']:.2f}% [" in text
        else:
            assert "refused: 10000 impostor pairs give 10 at FAR 0.001" in text
    assert THRESHOLD_BOOTSTRAP >= 200
