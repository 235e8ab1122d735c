"""Prototypical loss against a brute-force loop over queries and classes, the split of an episode, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from toolkit.data.episodic import EpisodeBatchSampler
from toolkit.errors import ToolkitError
from toolkit.losses.prototypical import PrototypicalLoss


def _episode(way: int, shot: int, query: int, dim: int = 6, seed: int = 0, shuffle: bool = True):
    """An episode batch; items of a class keep their order (support first) even when classes interleave."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([10 + 3 * c for c in range(way) for _ in range(shot + query)])  # not 0..way-1
    x = torch.randn(len(labels), dim, generator=g, dtype=torch.float64)
    if shuffle:  # interleave classes but keep each class's internal order
        keys = torch.rand(len(labels), generator=g)
        per_class_rank = torch.arange(len(labels)) % (shot + query)
        order = torch.argsort(per_class_rank * 100 + keys)  # rank-major: class order kept
        x, labels = x[order], labels[order]
    return x, labels


def _brute_force(x: torch.Tensor, labels: torch.Tensor, shot: int, scale: float | None) -> float:
    """Snell et al. Algorithm 1 as loops: prototypes from the first `shot` items of each class."""
    classes = sorted(set(labels.tolist()))
    members = {c: [i for i in range(len(labels)) if int(labels[i]) == c] for c in classes}
    protos = {c: sum(x[i] for i in members[c][:shot]) / shot for c in classes}
    total, count = 0.0, 0
    for c in classes:
        for i in members[c][shot:]:
            scores = []
            for k in classes:
                if scale is None:
                    scores.append(-float(((x[i] - protos[k]) ** 2).sum()))
                else:
                    cos = float(x[i] @ protos[k] / (x[i].norm() * protos[k].norm()))
                    scores.append(scale * cos)
            log_z = math.log(sum(math.exp(s) for s in scores))
            total += log_z - scores[classes.index(c)]
            count += 1
    return total / count


@pytest.mark.parametrize("way, shot, query", [(3, 1, 2), (5, 3, 4), (2, 2, 1)])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_euclidean_matches_brute_force(way: int, shot: int, query: int, dtype: torch.dtype) -> None:
    x, labels = _episode(way, shot, query, seed=way + shot)
    out = PrototypicalLoss(shot, query, "euclidean")(x.to(dtype), labels)
    assert out.loss.item() == pytest.approx(_brute_force(x, labels, shot, None), rel=1e-5)
    assert out.num_terms == way * query


@pytest.mark.parametrize("way, shot, query", [(3, 1, 2), (4, 2, 3)])
def test_cosine_with_scale_matches_brute_force(way: int, shot: int, query: int) -> None:
    x, labels = _episode(way, shot, query, seed=1)
    loss = PrototypicalLoss(shot, query, "cosine", init_scale=7.0)
    assert loss(x, labels).loss.item() == pytest.approx(_brute_force(x, labels, shot, 7.0), rel=1e-5)


def test_gradient_reaches_the_learned_temperature_and_matches_finite_differences() -> None:
    x, labels = _episode(4, 2, 3, seed=2)
    loss = PrototypicalLoss(2, 3, "cosine", init_scale=5.0).double()
    loss(x, labels).loss.backward()
    grad = loss.log_scale.grad
    assert grad is not None and grad.abs().item() > 0
    eps = 1e-6  # d loss / d log_scale = s * d loss / d s
    numeric = (_brute_force(x, labels, 2, 5.0 * math.exp(eps)) - _brute_force(x, labels, 2, 5.0 * math.exp(-eps))) / (2 * eps)
    assert grad.item() == pytest.approx(numeric, rel=1e-4)
    assert list(PrototypicalLoss(1, 1, "euclidean").parameters()) == []  # nothing to learn for Snell's form


def test_active_fraction_is_the_query_error_rate() -> None:
    # two far-apart classes, queries at their own prototype: no error; swap the labels: all wrong
    x = torch.tensor([[0.0, 0], [0, 0.1], [10, 10], [10, 10.1]])
    assert PrototypicalLoss(1, 1)(x, torch.tensor([0, 0, 1, 1])).active_fraction == 0.0
    y = torch.tensor([[0.0, 0], [10, 10], [0, 0.1], [10, 10.1]])  # each query sits on the other class's support
    assert PrototypicalLoss(1, 1)(y, torch.tensor([0, 1, 1, 0])).active_fraction == 1.0


def test_unequal_class_counts_are_a_one_line_error() -> None:
    with pytest.raises(ToolkitError, match="shot\\+query = 1\\+2 = 3 items; one has 2"):
        PrototypicalLoss(1, 2)(torch.randn(5, 4), torch.tensor([0, 0, 0, 1, 1]))


def test_episode_sampler_yields_class_major_support_then_query() -> None:
    labels = np.repeat(np.arange(12), 7)
    sampler = EpisodeBatchSampler(labels, way=5, shot=2, query=3, seed=4)
    assert len(sampler) == int(np.ceil(len(labels) / 25))
    for batch in sampler:
        assert len(batch) == 25 and len(set(batch)) == 25
        blocks = labels[np.array(batch)].reshape(5, 5)
        assert (blocks == blocks[:, :1]).all() and len(set(blocks[:, 0].tolist())) == 5
    sampler.set_epoch(1)
    again = EpisodeBatchSampler(labels, way=5, shot=2, query=3, seed=4)
    again.set_epoch(1)
    assert list(sampler) == list(again)
    with pytest.raises(ToolkitError, match="at least 2 classes"):
        EpisodeBatchSampler(labels, way=1, shot=1, query=1)
