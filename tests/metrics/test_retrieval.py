"""Retrieval figures (recall@k, AP@k) against scikit-learn and a hand-made case."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score

from toolkit.metrics.retrieval import Match, QueryResult, average_precision_at_k, summarise


def test_ap_over_the_whole_ranking_equals_sklearn() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        truth = rng.random(30) < 0.3
        truth[0] = True
        scores = rng.random(30)
        order = np.argsort(-scores)
        ours = average_precision_at_k(truth[order].tolist(), int(truth.sum()), k=30)
        assert abs(ours - average_precision_score(truth, scores)) < 1e-12


def test_summary_of_a_hand_made_case() -> None:
    gallery = ["g/a/1.png", "g/a/2.png", "g/b/1.png", "g/b/2.png"]
    results = [
        QueryResult("q/a/x.png", [Match("g/b/1.png", "b", 0.9), Match("g/a/1.png", "a", 0.8)]),  # AP@2 = (1/2)/2
        QueryResult("q/b/y.png", [Match("g/b/2.png", "b", 0.7), Match("g/b/1.png", "b", 0.6)]),  # AP@2 = 1
        QueryResult("q/c/z.png", [], error="no such file"),
    ]
    s = summarise(results, [p.split("/")[1] for p in gallery], k=2)
    assert (s.queries, s.evaluated) == (3, 2)
    assert (s.recall_at_1, s.recall_at_k, s.mean_ap) == (0.5, 1.0, (0.25 + 1.0) / 2)


def test_no_labels_when_the_gallery_has_one_folder() -> None:
    results = [QueryResult("q/x.png", [Match("g/1.png", "g", 0.5)])]
    s = summarise(results, ["g"], k=1)
    assert s.evaluated == 0 and s.recall_at_1 is None
