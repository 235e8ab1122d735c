"""The Prototypical Network baseline: its loss against a loop over Eq. 1-2, its episode rule by hand."""

from __future__ import annotations

import math

import numpy as np
import torch

from toolkit.evaluate.episodes import sample_episodes
from toolkit.data.store import ImageStore
from toolkit.data.preprocess import Normalizer
from benchmarks.protonet import ProtoNetSettings, euclidean_episodes, prototypical_loss, train_protonet


def test_loss_matches_a_loop_over_the_papers_equations() -> None:
    way, shot, query, dim = 3, 2, 4, 5
    emb = torch.randn(way * (shot + query), dim, dtype=torch.float64)
    loss, accuracy = prototypical_loss(emb, way, shot, query)
    rows = emb.view(way, shot + query, dim)
    prototypes = [rows[c, :shot].mean(0) for c in range(way)]  # Eq. 1
    total, correct = 0.0, 0
    for c in range(way):
        for q in rows[c, shot:]:
            d = [float(((q - p) ** 2).sum()) for p in prototypes]
            log_p = -d[c] - math.log(sum(math.exp(-x) for x in d))  # Eq. 2, log-softmax of -d
            total -= log_p
            correct += int(np.argmin(d) == c)
    assert float(loss) == pytest_approx(total / (way * query))
    assert float(accuracy) == pytest_approx(correct / (way * query))


def pytest_approx(value: float):  # noqa: ANN201
    import pytest

    return pytest.approx(value, rel=1e-6)  # the loss computes in float32


def test_euclidean_rule_on_a_hand_built_case() -> None:
    # Class 0: a long vector a0 and a short a1 pointing the same way; class 1: two copies of b.
    # With a0 as support, the query a1 is nearer b by squared Euclidean distance (1.64 < 81.04),
    # so that episode scores 1/2 (cosine would say class 0); with a1 as support, a0 is nearer
    # a1 (81.04 < 101) and the episode scores 1. Class 1's query always finds b.
    emb = np.array([[10.0, 0.0], [1.0, 0.2], [0.0, 1.0], [0.0, 1.0]])
    labels = np.array([0, 0, 1, 1])
    out = euclidean_episodes(emb, labels, way=2, shot=1, query=1, episodes=40, seed=3)
    expected = [0.5 if 0 in ep.support else 1.0 for ep in sample_episodes(labels, 2, 1, 1, 40, seed=3)]
    assert out["prototype"]["mean"] == pytest_approx(np.mean(expected))
    assert 0.5 < np.mean(expected) < 1.0  # both cases occur
    assert out["prototype"] == out["nearest"]  # 1-shot: the prototype is the support itself
    assert set(out) == {"way", "shot", "query", "episodes", "prototype", "nearest"}


def test_training_runs_and_returns_an_eval_mode_network() -> None:
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(6), 4)
    images = torch.from_numpy(rng.integers(0, 255, size=(24, 1, 16, 16), dtype=np.uint8))
    store = ImageStore(images, labels, [str(c) for c in range(6)], [str(i) for i in range(24)], [])
    normalizer = Normalizer([0.5], [0.25], torch.device("cpu"))
    net, seconds = train_protonet(store, normalizer, ProtoNetSettings(way=3, shot=1, query=2, episodes=3, width=4,
                                                                      precision="fp32"), log_every=0)
    assert not net.training and seconds > 0
    assert net(normalizer(images[:2])).shape == (2, 4)
