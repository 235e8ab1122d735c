"""Calibrated thresholds against scikit-learn's ROC curve, and open-set episodes against brute force."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from toolkit.evaluate.calibration import (OpenSetSpec, calibrate, far_threshold, open_set_report, open_set_scores,
                                          open_set_spec)


@pytest.mark.parametrize("far", [1e-3, 0.01, 0.05, 0.2, 0.5])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_far_threshold_is_the_last_roc_point_within_the_target(far: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    same = rng.random(3000) < 0.5
    scores = np.round(np.where(same, rng.normal(0.6, 0.2, 3000), rng.normal(0.2, 0.2, 3000)), 2)  # ties on purpose
    fpr, _, thresholds = roc_curve(same, scores, drop_intermediate=False)
    i = int(np.flatnonzero(fpr <= far + 1e-12).max())  # the most accepting point whose FAR stays within the target
    threshold = far_threshold(scores, same, far)
    if i == 0:  # even the top score must be rejected: just above the highest impostor
        assert threshold > scores[~same].max()
    else:
        assert threshold == pytest.approx(thresholds[i])
    assert np.mean(scores[~same] >= threshold) <= far + 1e-12


def test_far_threshold_when_the_top_score_is_an_impostor() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.1])
    same = np.array([False, True, True, False])
    assert far_threshold(scores, same, 0.1) > 0.9  # nextafter(0.9): the impostor at 0.9 is rejected
    assert far_threshold(scores, same, 0.5) == 0.7  # one impostor may pass: accept down to the lowest genuine


def _one_hot_embeddings(classes: int, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    labels = np.repeat(np.arange(classes), per_class)
    return np.eye(classes, dtype=np.float32)[labels], labels


def test_open_set_report_on_orthogonal_classes_matches_hand_computed_rates() -> None:
    emb, labels = _one_hot_embeddings(8, 5)  # a known query scores 1 with its prototype, an unknown one 0
    perfect = open_set_report(emb, labels, 0.5, way=4, shot=1, query=3, episodes=20, seed=0)
    assert perfect is not None and (perfect["known_way"], perfect["unknown_way"]) == (4, 4)
    assert perfect["open_set_accuracy"]["mean"] == 1 and perfect["unknown_rejection"]["mean"] == 1
    assert perfect["known_accuracy"]["mean"] == 1
    strict = open_set_report(emb, labels, 1.5, way=4, shot=1, query=3, episodes=20, seed=0)  # rejects every query
    assert strict["open_set_accuracy"]["mean"] == pytest.approx(0.5)  # 12 unknown of 24 queries, all rejected
    assert strict["unknown_rejection"]["mean"] == 1 and strict["known_accuracy"]["mean"] == 0
    lax = open_set_report(emb, labels, -1.0, way=4, shot=1, query=3, episodes=20, seed=0)  # accepts every query
    assert lax["open_set_accuracy"]["mean"] == pytest.approx(0.5) and lax["unknown_rejection"]["mean"] == 0


def test_open_set_scores_equal_a_brute_force_loop() -> None:
    from toolkit.evaluate.episodes import sample_episodes

    rng = np.random.default_rng(3)
    labels = np.repeat(np.arange(7), 6)
    emb = rng.normal(size=(len(labels), 5)) + 2 * rng.normal(size=(7, 5))[labels]
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    spec = OpenSetSpec(known=3, unknown=2, shot=2, query=3, episodes=4)
    best, known, right, episode = open_set_scores(emb, labels, spec, seed=5)
    row = 0
    for e, ep in enumerate(sample_episodes(labels, 5, 2, 3, 4, seed=5)):
        protos = []
        for c in range(3):
            mean = emb[ep.support[c]].mean(axis=0)
            protos.append(mean / np.linalg.norm(mean))
        for position in range(5):
            for q in ep.query[position]:
                sims = [float(emb[q] @ p) for p in protos]
                assert best[row] == pytest.approx(max(sims), abs=1e-6)
                assert known[row] == (position < 3) and episode[row] == e
                assert right[row] == (position < 3 and int(np.argmax(sims)) == position)
                row += 1
    assert row == len(best)


def test_open_set_spec_shrinks_to_what_the_split_allows() -> None:
    labels = np.repeat(np.arange(3), [4, 6, 9])
    assert open_set_spec(labels, way=5, shot=1, query=15, episodes=10) == OpenSetSpec(2, 1, 1, 3, 10)
    assert open_set_spec(np.zeros(5, dtype=int), 5, 1, 3, 10) is None  # one class: nothing can be unknown


def test_calibrate_uses_the_roc_curve_thresholds_of_the_split_it_is_given() -> None:
    emb, labels = _one_hot_embeddings(6, 6)
    noisy = emb + np.random.default_rng(0).normal(scale=0.3, size=emb.shape)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)
    cal = calibrate(noisy, labels, "val", way=3, shot=1, query=3, episodes=30, pairs=20000, seed=0, far=0.01)
    assert set(cal.to_json()) == {"split", "threshold_eer", "threshold_far", "unknown_threshold", "genuine_pairs",
                        "impostor_pairs", "threshold_eer_ci95", "threshold_far_ci95", "threshold_far_refused", "open_set_shape"}
    assert cal.split == "val" and cal.threshold_far_refused is None
    assert cal.threshold_far is not None and cal.threshold_far >= cal.threshold_eer  # 1% FAR is stricter than EER here
    assert cal.unknown_threshold is not None and -1 <= cal.unknown_threshold <= 1
