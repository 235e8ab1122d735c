"""Prototypical Networks (Snell, Swersky & Zemel 2017): the few-shot baseline trained from scratch.

Episodic training: each episode draws ``way`` classes with ``shot`` support and ``query`` query
images per class; the prototype of a class is the mean support embedding (Eq. 1) and a query's
class probabilities are a softmax over negative squared Euclidean distances to the prototypes
(Eq. 2); the loss is their cross-entropy. The network is the Conv-4 of the paper (four blocks of
3x3 conv, BN, ReLU, 2x2 max-pool; 64-d output at 28x28), trained with Adam at lr 1e-3 halved
every 2000 episodes (Sec. 3.1). Evaluation uses the same rule on the same episodes as
``toolkit.evaluate.episodes`` (same labels and seed give the same episodes).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from toolkit.evaluate.episodes import check_episodes, sample_episodes, summarize
from toolkit.evaluate.within_group import sample_within_group_episodes
from toolkit.data.store import ImageStore
from toolkit.models.backbones import ConvNet
from toolkit.engine.precision import autocast_context, autocast_dtype
from toolkit.data.preprocess import Normalizer


@dataclass(frozen=True)
class ProtoNetSettings:
    """Training episodes of the baseline (Snell et al. 2017, Sec. 3.1: 60-way, 5 queries on Omniglot)."""

    way: int = 60
    shot: int = 1
    query: int = 5
    episodes: int = 2000
    seconds: float = 0.0  # > 0: stop at the first episode that ends past this many seconds (a CPU-time budget)
    lr: float = 1e-3
    halve_every: int = 2000
    width: int = 64
    seed: int = 0
    precision: str = "auto"  # as train.precision: the same mixed precision as the toolkit's runs


def prototypical_loss(embeddings: torch.Tensor, way: int, shot: int, query: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss and accuracy of one episode whose rows are class-major: way x (shot + query) embeddings.

    Args:
        embeddings: (way * (shot + query)) x D; rows of class i are contiguous, support first.

    Returns:
        Cross-entropy over the queries (Eq. 2) and their accuracy.
    """
    x = embeddings.float().view(way, shot + query, -1)
    prototypes = x[:, :shot].mean(dim=1)  # way x D (Eq. 1)
    queries = x[:, shot:].reshape(way * query, -1)  # (way * query) x D
    logits = -torch.cdist(queries, prototypes).pow(2)  # negative squared Euclidean distance
    target = torch.arange(way, device=embeddings.device).repeat_interleave(query)
    return F.cross_entropy(logits, target), (logits.argmax(1) == target).float().mean()


def train_protonet(store: ImageStore, normalizer: Normalizer, settings: ProtoNetSettings,
                   log_every: int = 200) -> tuple[nn.Module, float]:
    """Train a Conv-4 episodically on ``store`` (labeled); returns the network (eval mode) and seconds.

    Raises:
        ToolkitError: the store has fewer than ``way`` classes or a class smaller than shot + query.
    """
    assert store.labels is not None
    check_episodes(store.labels, settings.way, settings.shot, settings.query, store.class_names)
    torch.manual_seed(settings.seed)
    channels = int(store.images.shape[1])
    net = ConvNet(channels, settings.width).to(normalizer.device, memory_format=normalizer.memory_format)
    autocast = autocast_context(normalizer.device, autocast_dtype(settings.precision, normalizer.device))
    optimizer = torch.optim.Adam(net.parameters(), lr=settings.lr)
    schedule = torch.optim.lr_scheduler.StepLR(optimizer, step_size=settings.halve_every, gamma=0.5)
    rng = np.random.default_rng(settings.seed)
    classes = np.unique(store.labels)
    members = {int(c): np.flatnonzero(store.labels == c) for c in classes}
    net.train()
    tic = time.perf_counter()
    recent: list[float] = []
    for episode in range(1, settings.episodes + 1):
        chosen = rng.choice(classes, settings.way, replace=False)
        index = np.concatenate([rng.choice(members[int(c)], settings.shot + settings.query, replace=False)
                                for c in chosen])
        x = normalizer(store.images[torch.from_numpy(index)])
        with autocast():
            embeddings = net(x)
        loss, accuracy = prototypical_loss(embeddings, settings.way, settings.shot, settings.query)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        recent.append(float(accuracy))
        if log_every and episode % log_every == 0:
            print(f"protonet episode {episode}/{settings.episodes}: train accuracy {np.mean(recent):.4f}, "
                  f"{time.perf_counter() - tic:.0f} s", file=sys.stderr, flush=True)  # stdout is the benchmark's JSON
            recent = []
        if settings.seconds > 0 and time.perf_counter() - tic >= settings.seconds:
            print(f"protonet: time budget of {settings.seconds:.0f} s reached after {episode} episodes",
                  file=sys.stderr, flush=True)
            break
    net.trained_episodes = episode  # type: ignore[assignment]
    return net.eval(), time.perf_counter() - tic


@torch.no_grad()
def euclidean_episodes(embeddings: np.ndarray, labels: np.ndarray, way: int, shot: int, query: int,
                       episodes: int = 600, seed: int = 0, groups_of_class: np.ndarray | None = None) -> dict:
    """Episode accuracy of the ProtoNet rule (nearest mean by squared Euclidean distance), with 95% CI.

    With ``groups_of_class`` (a group id per label), every episode's classes share one group, as in
    ``toolkit evaluate --within-group`` (same labels, groups and seed give the same episodes).

    Returns:
        The ``fewshot`` dict of ``toolkit.evaluate.episodes.run_episodes``, with ``prototype`` = the
        ProtoNet rule and ``nearest`` = 1-NN by Euclidean distance.
    """
    check_episodes(labels, way, shot, query)
    if groups_of_class is None:
        drawn = sample_episodes(np.asarray(labels), way, shot, query, episodes, seed)
    else:
        drawn = sample_within_group_episodes(np.asarray(labels), groups_of_class, way, shot, query, episodes, seed)
    proto_acc, nearest_acc = [], []
    for ep in drawn:
        support = embeddings[ep.support]  # way x shot x D
        queries = embeddings[ep.query.reshape(-1)]  # (way * query) x D
        truth = np.repeat(np.arange(way), query)
        prototypes = support.mean(axis=1)
        d_proto = ((queries[:, None, :] - prototypes[None]) ** 2).sum(-1)
        d_support = ((queries[:, None, :] - support.reshape(way * shot, -1)[None]) ** 2).sum(-1)
        proto_acc.append(np.mean(d_proto.argmin(1) == truth))
        nearest_acc.append(np.mean(d_support.argmin(1) // shot == truth))
    return {"way": way, "shot": shot, "query": query, "episodes": episodes,
            "prototype": summarize(np.asarray(proto_acc)), "nearest": summarize(np.asarray(nearest_acc))}
