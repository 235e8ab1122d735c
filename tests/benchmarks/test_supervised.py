"""The supervised long-tail baseline stops at its CPU budget and learns; ProtoNet's within-group episodes share a group."""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.protonet import euclidean_episodes
from benchmarks.supervised import SupervisedSettings, predict, train_supervised
from toolkit.config import load_recipe
from toolkit.data.preprocess import Normalizer
from toolkit.data.store import load_data


def test_supervised_baseline_spends_its_budget_and_beats_chance() -> None:
    recipe = load_recipe(None, {"data.image_size": 16, "data.channels": 1, "model.width": 8, "data.train_limit": 400,
                                "data.test_limit": 200})
    loaded = load_data(recipe.data)
    normalizer = Normalizer([0.5], [0.25], torch.device("cpu"))
    net, stats = train_supervised(recipe, loaded.train, normalizer, SupervisedSettings(seconds=3.0, batch_size=40,
                                                                                      m_per_class=4, lr=0.1))
    assert 3.0 <= stats["cpu_seconds"] < 30 and stats["steps"] > 0
    pred = predict(net, loaded.test, normalizer, 16)
    assert pred.shape == (len(loaded.test),) and np.mean(pred == loaded.test.labels) > 0.2  # chance is 0.1


def test_protonet_within_group_episodes() -> None:
    # Every image of a group's classes has the same embedding (its group's one-hot vector): classes of
    # one group are indistinguishable (ties go to the episode's first class, accuracy exactly 1/way),
    # classes of different groups are perfectly separable (a mixed episode scores above 1/way).
    labels = np.repeat(np.arange(8), 5)
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    emb = np.eye(4, dtype=np.float32)[groups[labels]]
    within = euclidean_episodes(emb, labels, 3, 1, 2, episodes=40, seed=0, groups_of_class=groups)
    assert (within["way"], within["shot"], within["query"], within["episodes"]) == (3, 1, 2, 40)
    for rule in ("prototype", "nearest"):
        assert within[rule] == {"mean": 1 / 3, "ci95": 0.0}  # every episode within one group
    mixed = euclidean_episodes(emb, labels, 3, 1, 2, episodes=40, seed=0)
    assert mixed["prototype"]["mean"] > 0.5  # most 3-of-8 draws span both groups
