"""Verification metrics on hand-worked score lists; AUC against a Mann-Whitney pair count."""

import numpy as np
import pytest

from toolkit.errors import ToolkitError
from toolkit.metrics.verification import sample_pairs, verification_metrics


def _rates(scores, same, threshold) -> tuple[float, float]:
    """(FAR, FRR) of the rule "score >= threshold means same", counted pair by pair."""
    accepted_diff = sum(s >= threshold for s, y in zip(scores, same) if not y)
    rejected_same = sum(s < threshold for s, y in zip(scores, same) if y)
    return accepted_diff / sum(not y for y in same), rejected_same / sum(bool(y) for y in same)


def test_eer_reached_exactly():
    # same 0.9 0.8 0.7 0.3, different 0.6 0.4 0.2 0.1. At threshold 0.6: 0.3 rejected -> FRR 1/4,
    # 0.6 accepted -> FAR 1/4, so EER = 0.25 exactly at 0.6.
    scores = [0.9, 0.8, 0.7, 0.3, 0.6, 0.4, 0.2, 0.1]
    same = [1, 1, 1, 1, 0, 0, 0, 0]
    out = verification_metrics(np.array(scores), np.array(same))
    assert out["eer"] == pytest.approx(0.25)
    assert out["threshold"] == pytest.approx(0.6)
    assert _rates(scores, same, out["threshold"]) == (0.25, 0.25)
    # AUC: of 16 (same, different) pairs only (0.3, 0.6) and (0.3, 0.4) are misordered.
    assert out["roc_auc"] == pytest.approx(14 / 16)


def test_eer_interpolated_between_operating_points():
    # same 0.9 0.8 0.3, different 0.7 0.2. Operating points (FAR, FRR):
    #   t=0.8: (0, 1/3) -> FRR - FAR = +1/3;  t=0.7: (1/2, 1/3) -> -1/6.
    # Along the segment FAR = s/2, FRR = 1/3; they meet at s = 2/3: EER = 1/3.
    # The nearer real point is t=0.7 (|-1/6| < |1/3|).
    scores = [0.9, 0.8, 0.3, 0.7, 0.2]
    same = [True, True, True, False, False]
    out = verification_metrics(np.array(scores), np.array(same))
    assert out["eer"] == pytest.approx(1 / 3)
    assert out["threshold"] == pytest.approx(0.7)
    assert _rates(scores, same, 0.7) == pytest.approx((0.5, 1 / 3))


def test_threshold_can_be_the_point_before_the_crossing():
    # same 0.9 0.8 0.7 0.65 0.1, different 0.6 0.2. (FAR, FRR) at t=0.65: (0, 1/5), gap +1/5;
    # at t=0.6: (1/2, 1/5), gap -3/10. Crossing at FAR = FRR = 1/5; 0.65 is the nearer point.
    scores = [0.9, 0.8, 0.7, 0.65, 0.1, 0.6, 0.2]
    same = [1, 1, 1, 1, 1, 0, 0]
    out = verification_metrics(np.array(scores), np.array(same))
    assert out["eer"] == pytest.approx(0.2)
    assert out["threshold"] == pytest.approx(0.65)
    assert _rates(scores, same, 0.65) == pytest.approx((0.0, 0.2))


def test_perfect_separation():
    out = verification_metrics(np.array([0.9, 0.8, 0.2, 0.1]), np.array([1, 1, 0, 0]))
    assert out == {"roc_auc": 1.0, "eer": 0.0, "threshold": pytest.approx(0.8)}


def test_roc_auc_matches_mann_whitney_pair_count():
    rng = np.random.default_rng(0)
    same = rng.random(300) < 0.4
    scores = np.round(rng.normal(size=300) + 0.8 * same, 1)  # rounding makes ties
    positives, negatives = scores[same], scores[~same]
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    want = wins / (len(positives) * len(negatives))
    assert verification_metrics(scores, same)["roc_auc"] == pytest.approx(want, abs=1e-12)


def test_eer_agrees_with_a_threshold_sweep():
    rng = np.random.default_rng(1)
    same = np.repeat([True, False], 200)
    scores = rng.normal(size=400) + 1.5 * same
    out = verification_metrics(scores, same)
    sweep = [_rates(scores, same, t) for t in np.sort(scores)]
    best_gap = min(abs(far - frr) for far, frr in sweep)
    far, frr = _rates(scores, same, out["threshold"])
    assert abs(far - frr) == pytest.approx(best_gap)
    assert min(far, frr) - 1e-12 <= out["eer"] <= max(far, frr) + 1e-12


def test_one_kind_of_pair_is_an_error():
    with pytest.raises(ToolkitError, match="got 3 same and 0 different"):
        verification_metrics(np.array([0.1, 0.2, 0.3]), np.array([1, 1, 1]))
    with pytest.raises(ToolkitError, match="got 0 same and 2 different"):
        verification_metrics(np.array([0.1, 0.2]), np.array([False, False]))
    with pytest.raises(ToolkitError, match="must be equal-length"):
        verification_metrics(np.array([0.1, 0.2]), np.array([1]))
    with pytest.raises(ToolkitError, match="1 NaN/inf"):
        verification_metrics(np.array([0.1, np.nan]), np.array([1, 0]))


def test_sample_pairs_are_balanced_and_labelled_right():
    labels = np.array([3, 1, 3, 0, 1, 3, 2, 1, 3, 3, 5])  # classes 0, 2 and 5 have one image
    a, b, same = sample_pairs(labels, num_pairs=401, seed=0)
    assert len(a) == len(b) == len(same) == 401
    assert same.sum() == 200  # 401 // 2 same, 201 different
    assert ((labels[a] == labels[b]) == same).all()
    assert (a != b).all()
    assert set(labels[a[same]].tolist()) == {1, 3}  # singletons never anchor a same pair
    assert {0, 2, 5} <= set(labels[a[~same]].tolist()) | set(labels[b[~same]].tolist())
    again = sample_pairs(labels, num_pairs=401, seed=0)
    assert all(np.array_equal(x, y) for x, y in zip((a, b, same), again))
    other = sample_pairs(labels, num_pairs=401, seed=1)
    assert not np.array_equal(a, other[0])


def test_sample_pairs_covers_every_partner():
    # The skip-the-anchor arithmetic must reach all other members, including the last one.
    labels = np.array([0, 1, 0, 1, 0, 2])
    a, b, same = sample_pairs(labels, num_pairs=2000, seed=2)
    got = set(zip(a[same].tolist(), b[same].tolist()))
    assert got == {(0, 2), (0, 4), (2, 0), (2, 4), (4, 0), (4, 2), (1, 3), (3, 1)}
    diff = set(zip(a[~same].tolist(), b[~same].tolist()))
    want = {(i, j) for i in range(6) for j in range(6) if labels[i] != labels[j]}
    assert diff == want


def test_sample_pairs_errors():
    with pytest.raises(ToolkitError, match="need >= 2 classes; labels have 1"):
        sample_pairs(np.array([4, 4, 4]), 10, seed=0)
    with pytest.raises(ToolkitError, match="every class has 1"):
        sample_pairs(np.array([0, 1, 2]), 10, seed=0)
    with pytest.raises(ToolkitError, match=r"num_pairs must be >= 2 .*; got 1"):
        sample_pairs(np.array([0, 0, 1]), 1, seed=0)
