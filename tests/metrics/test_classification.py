"""kNN and prototype classifiers against brute-force loops; metrics against hand-worked numbers."""

import math

import numpy as np
import pytest

from toolkit.metrics import classification as cl
from toolkit.errors import ToolkitError


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _imbalanced_split(seed: int = 0):
    """Train counts 2 / 5 / 13 (long-tailed), 40 test points; noisy so votes are contested."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, 6))
    train_labels = np.repeat(np.arange(3), [2, 5, 13])
    test_labels = rng.integers(0, 3, 40)
    train = _unit(centres[train_labels] + 1.0 * rng.normal(size=(20, 6)))
    test = _unit(centres[test_labels] + 1.0 * rng.normal(size=(40, 6)))
    return train, train_labels, test


def _brute_knn(train, train_labels, test, k: int, temperature: float) -> list[int]:
    """Every test point against every train point, votes summed class by class."""
    predictions = []
    for q in test:
        sims = [sum(float(a) * float(b) for a, b in zip(q, t)) for t in train]
        nearest = sorted(range(len(train)), key=lambda j: -sims[j])[: min(k, len(train))]
        votes = [0.0] * (int(max(train_labels)) + 1)
        for j in nearest:
            votes[train_labels[j]] += math.exp(sims[j] / temperature)
        predictions.append(votes.index(max(votes)))
    return predictions


# k = 1; 2 = the smallest class's count; 5 = the middle class's; 7; 13 = the largest class's;
# 20 = the train size; 50 > the train size (clipped).
@pytest.mark.parametrize("k", [1, 2, 5, 7, 13, 20, 50])
@pytest.mark.parametrize("temperature", [0.1, 1.0])
def test_knn_matches_brute_force(k, temperature, monkeypatch):
    monkeypatch.setattr(cl, "QUERY_CHUNK", 7)  # several query and key blocks, ragged last ones
    monkeypatch.setattr(cl, "KEY_CHUNK", 6)
    train, train_labels, test = _imbalanced_split()
    want = _brute_knn(train, train_labels, test, k, temperature)
    got = cl.knn_predict(train, train_labels, test, k=k, temperature=temperature)
    assert got.dtype == np.int64 and got.shape == (40,)
    assert got.tolist() == want


def test_knn_weighting_matters_on_this_data():
    # Hand-worked: the query (1, 0) has one class-0 neighbour at cosine 1 and three class-1
    # neighbours at cosine 0.5 (60 degrees). Votes exp(sim / T):
    #   T = 0.1: class 0 e^10 = 22026 > class 1 3 e^5 = 445 -> the one close neighbour wins;
    #   T = 10:  class 0 e^0.1 = 1.11 < class 1 3 e^0.05 = 3.15 -> nearly a plain majority, class 1;
    #   T = 0.1 with class 1's votes scaled by 100: 44524 > 22026 -> class 1.
    c, s = 0.5, math.sqrt(0.75)
    train = np.array([[1.0, 0.0], [c, s], [c, -s], [c, s]], dtype=np.float32)
    train_labels = np.array([0, 1, 1, 1])
    query = np.array([[1.0, 0.0]], dtype=np.float32)
    assert cl.knn_predict(train, train_labels, query, k=4, temperature=0.1).tolist() == [0]
    assert cl.knn_predict(train, train_labels, query, k=4, temperature=10.0).tolist() == [1]
    assert cl.knn_predict(train, train_labels, query, k=1, temperature=10.0).tolist() == [0]  # only the nearest votes
    scaled = cl.knn_predict(train, train_labels, query, k=4, temperature=0.1, class_vote_scale=np.array([1.0, 100.0]))
    assert scaled.tolist() == [1]
    # And on the long-tailed split above, k = 20 (every train point): a plain majority would always
    # say class 2 (13 of 20); the similarity-weighted vote does not.
    train, train_labels, test = _imbalanced_split()
    assert set(cl.knn_predict(train, train_labels, test, k=20, temperature=0.1).tolist()) != {2}


def test_knn_never_predicts_a_class_missing_from_train():
    train, train_labels, test = _imbalanced_split()
    train_labels = np.where(train_labels == 1, 3, train_labels)  # labels 0, 2, 3: no class 1
    got = cl.knn_predict(train, train_labels, test, k=200)
    assert set(got.tolist()) <= {0, 2, 3}


def test_prototype_matches_brute_force():
    train, train_labels, test = _imbalanced_split(seed=1)
    train_labels = train_labels * 2  # labels 0, 2, 4: predictions must map back to them
    want = []
    for q in test:
        best, best_class = -2.0, -1
        for c in (0, 2, 4):
            members = train[train_labels == c].astype(np.float64)
            mean = members.sum(axis=0) / len(members)
            sim = float(q @ mean) / math.sqrt(float(mean @ mean))
            if sim > best:
                best, best_class = sim, c
        want.append(best_class)
    assert cl.prototype_predict(train, train_labels, test).tolist() == want


def _worked_example():
    # true: cat x6, dog x3, eel x1. cat: 5 right, 1 -> dog. dog: 1 right, 2 -> cat. eel -> cat.
    y_true = np.array([0] * 6 + [1] * 3 + [2])
    y_pred = np.array([0, 0, 0, 0, 0, 1] + [1, 0, 0] + [0])
    return y_true, y_pred, ["cat", "dog", "eel"]


def test_metrics_on_hand_worked_imbalanced_case():
    out = cl.classification_metrics(*_worked_example())
    assert set(out) == {"accuracy", "balanced_accuracy", "macro_f1", "per_class_recall"}
    assert out["accuracy"] == pytest.approx(6 / 10)
    # recalls: cat 5/6, dog 1/3, eel 0/1
    assert out["per_class_recall"] == {
        "cat": pytest.approx(5 / 6),
        "dog": pytest.approx(1 / 3),
        "eel": 0.0,
    }
    # balanced accuracy = mean recall = (5/6 + 1/3 + 0) / 3 = 7/18, far below accuracy 0.6
    assert out["balanced_accuracy"] == pytest.approx(7 / 18)
    assert out["balanced_accuracy"] == pytest.approx(sum(out["per_class_recall"].values()) / 3)
    # F1 = 2TP / (2TP + FP + FN): cat 10 / (10 + 3 + 1) = 5/7, dog 2 / (2 + 1 + 2) = 2/5, eel 0
    assert out["macro_f1"] == pytest.approx((5 / 7 + 2 / 5 + 0) / 3)


def test_metrics_skip_classes_absent_from_y_true():
    y_true, y_pred, names = _worked_example()
    out = cl.classification_metrics(y_true, y_pred, names + ["fox"])
    assert set(out["per_class_recall"]) == {"cat", "dog", "eel"}
    assert out["balanced_accuracy"] == pytest.approx(7 / 18)


def test_confusion_counts():
    y_true, y_pred, _ = _worked_example()
    want = [[5, 1, 0, 0], [2, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
    assert cl.confusion(y_true, y_pred, 4).tolist() == want


def test_errors_name_the_bad_value():
    train, train_labels, test = _imbalanced_split()
    with pytest.raises(ToolkitError, match="k must be >= 1; got 0"):
        cl.knn_predict(train, train_labels, test, k=0)
    with pytest.raises(ToolkitError, match="temperature must be > 0; got 0"):
        cl.knn_predict(train, train_labels, test, temperature=0.0)
    with pytest.raises(ToolkitError, match="6 vs 4"):
        cl.prototype_predict(train, train_labels, test[:, :4])
    with pytest.raises(ToolkitError, match="train_labels has shape"):
        cl.knn_predict(train, train_labels[:5], test)
    with pytest.raises(ToolkitError, match=r"y_pred contains label 3; valid labels are 0\.\.2"):
        cl.classification_metrics(np.array([0, 1]), np.array([0, 3]), ["a", "b", "c"])
    with pytest.raises(ToolkitError, match="y_true contains label -1"):
        cl.confusion(np.array([-1]), np.array([0]), 2)
