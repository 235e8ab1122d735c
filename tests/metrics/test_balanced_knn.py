"""Class-balanced kNN against a brute-force loop; the validation split; the rule choice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from toolkit.metrics.balanced_knn import RULES, balanced_knn_predict, choose_rule, validation_split
from toolkit.metrics.classification import knn_predict


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _brute_force(bank, labels, queries, k, t):
    counts = {c: int(np.sum(labels == c)) for c in set(labels.tolist())}
    n = len(labels)
    out = []
    for q in queries:
        sims = [float(np.dot(q, b)) for b in bank]
        order = sorted(range(n), key=lambda i: -sims[i])[:k]
        votes: dict[int, float] = {}
        for i in order:
            c = int(labels[i])
            votes[c] = votes.get(c, 0.0) + math.exp(sims[i] / t) / (counts[c] / n)
        best = max(votes.values())
        out.append(min(c for c, v in votes.items() if v >= best * (1 - 1e-9)))
    return np.array(out)


@pytest.mark.parametrize("k, t", [(1, 0.1), (7, 0.5), (25, 1.0), (500, 0.2)])
def test_matches_brute_force_on_a_long_tailed_bank(k: int, t: float) -> None:
    rng = np.random.default_rng(k)
    sizes = [60, 20, 6, 2]  # long tail
    labels = np.repeat(np.arange(4), sizes)
    centres = rng.normal(size=(4, 8))
    bank = _unit(centres[labels] + 0.9 * rng.normal(size=(len(labels), 8)))
    queries = _unit(centres[rng.integers(0, 4, 80)] + 0.9 * rng.normal(size=(80, 8)))
    ours = balanced_knn_predict(bank, labels, queries, k=k, temperature=t)
    assert (ours == _brute_force(bank, labels, queries, min(k, len(bank)), t)).all()


def test_equals_plain_knn_on_a_balanced_bank_and_helps_the_tail() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 10)
    bank = _unit(rng.normal(size=(30, 6)))
    queries = _unit(rng.normal(size=(50, 6)))
    assert (balanced_knn_predict(bank, labels, queries, 9, 0.3) == knn_predict(bank, labels, queries, 9, 0.3)).all()
    # a query midway between a 20-image head and a 2-image tail: plain kNN says head, balanced says tail
    head = _unit(np.array([[1.0, 0.02 * i] for i in range(20)]))
    tail = _unit(np.array([[0.0, 1.0], [0.02, 1.0]]))
    bank2, labels2 = np.vstack([head, tail]), np.array([0] * 20 + [1] * 2)
    query = _unit(np.array([[0.6, 0.8]]))
    assert knn_predict(bank2, labels2, query, k=10, temperature=1.0)[0] == 0
    assert balanced_knn_predict(bank2, labels2, query, k=10, temperature=1.0)[0] == 1


def test_validation_split_is_per_class_and_seeded() -> None:
    labels = np.repeat(np.arange(3), [10, 5, 1])
    keep, held = validation_split(labels, 0.2, seed=3)
    assert sorted(np.concatenate([keep, held]).tolist()) == list(range(16))
    assert np.bincount(labels[held], minlength=3).tolist() == [2, 1, 0]
    assert (validation_split(labels, 0.2, seed=3)[1] == held).all()


def test_choose_rule_returns_the_best_validation_score() -> None:
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(5), [80, 40, 10, 6, 5])
    centres = rng.normal(size=(5, 16))
    bank = _unit(centres[labels] + 0.8 * rng.normal(size=(len(labels), 16)))
    rule, scores = choose_rule(bank, labels, k=20, temperature=0.1, seed=0)
    assert set(scores) == set(RULES) | {"standard_error"} and all(0 <= scores[r] <= 1 for r in RULES)
    best = max(RULES, key=lambda name: (scores[name], -RULES.index(name)))
    assert rule in (best, "knn_balanced")


def test_choose_rule_on_a_validation_split_scores_every_rule_on_it() -> None:
    from sklearn.metrics import balanced_accuracy_score

    from toolkit.metrics.classification import knn_predict, prototype_predict

    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(4), [60, 30, 8, 5])
    centres = rng.normal(size=(4, 8))
    bank = _unit(centres[labels] + 0.9 * rng.normal(size=(len(labels), 8)))
    val_labels = np.repeat(np.arange(4), 6)
    val = _unit(centres[val_labels] + 0.9 * rng.normal(size=(len(val_labels), 8)))
    rule, scores = choose_rule(bank, labels, k=15, temperature=0.1, queries=(val, val_labels))
    expected = {  # each rule built from the whole bank, scored on the validation images only
        "knn": balanced_accuracy_score(val_labels, knn_predict(bank, labels, val, k=15, temperature=0.1)),
        "knn_balanced": balanced_accuracy_score(val_labels, balanced_knn_predict(bank, labels, val, k=15, temperature=0.1)),
        "prototype": balanced_accuracy_score(val_labels, prototype_predict(bank, labels, val)),
    }
    assert {r: scores[r] for r in RULES} == pytest.approx(expected)
    best = max(RULES, key=lambda name: (expected[name], -RULES.index(name)))
    assert rule in (best, "knn_balanced")


def _recall_per_class(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    return np.array([np.mean(pred[truth == c] == c) for c in np.unique(truth)])


@pytest.mark.parametrize("noise", [0.3, 1.2])
def test_choose_rule_keeps_the_default_unless_the_win_exceeds_its_standard_error(noise: float) -> None:
    """The best rule replaces the class-balanced kNN only when its balanced-accuracy gain is larger than
    the standard error of the per-class recall differences (computed here with sklearn's recall)."""
    from sklearn.metrics import recall_score

    from toolkit.metrics.classification import knn_predict, prototype_predict

    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(6), [90, 50, 20, 10, 6, 4])
    centres = rng.normal(size=(6, 8))
    bank = _unit(centres[labels] + noise * rng.normal(size=(len(labels), 8)))
    val_labels = np.repeat(np.arange(6), 5)
    val = _unit(centres[val_labels] + noise * rng.normal(size=(len(val_labels), 8)))
    preds = {"knn": knn_predict(bank, labels, val, k=15, temperature=0.1),
             "knn_balanced": balanced_knn_predict(bank, labels, val, k=15, temperature=0.1),
             "prototype": prototype_predict(bank, labels, val)}
    recalls = {n: recall_score(val_labels, p, average=None, labels=np.arange(6)) for n, p in preds.items()}
    best = max(RULES, key=lambda n: (recalls[n].mean(), -RULES.index(n)))
    diff = recalls[best] - recalls["knn_balanced"]
    se = diff.std(ddof=1) / np.sqrt(6)
    expected = best if best == "knn_balanced" or diff.mean() > se else "knn_balanced"
    rule, scores = choose_rule(bank, labels, k=15, temperature=0.1, queries=(val, val_labels))
    assert rule == expected
    assert scores["standard_error"] == pytest.approx(0.0 if best == "knn_balanced" else se)
