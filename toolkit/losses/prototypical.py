"""Prototypical loss on N-way K-shot episodes (Snell, Swersky & Zemel 2017, "Prototypical Networks").

An episode holds ``way`` classes with ``shot`` support and ``query`` query embeddings each. The
prototype of class k is the mean of its support embeddings (Eq. 1); a query's class
distribution is a softmax over negative squared Euclidean distances to the prototypes (Eq. 2),
and the loss is the cross-entropy of the queries' true classes (Algorithm 1), averaged over the
queries.

Our encoder's embeddings are l2-normalised, so squared Euclidean distances lie in [0, 4] and the
softmax cannot become sharp; the cosine variant instead scales cosine similarities by a learned
factor ``s = exp(log_scale)`` (the learned temperature of Oreshkin et al. 2018, "TADAM", Sec. 2.2,
and of Chen et al. 2019's cosine classifier), which the optimiser tunes with the encoder.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toolkit.errors import ToolkitError
from toolkit.losses.output import LossOutput, check_batch

PROTO_DISTANCES = ("euclidean", "cosine")


def split_episode(embeddings: Tensor, labels: Tensor, shot: int, query: int) -> tuple[Tensor, Tensor, Tensor]:
    """Support and query embeddings of an episode batch, grouped by class.

    Every class in the batch must appear exactly ``shot + query`` times; within a class, the first
    ``shot`` items in batch order are its support (the order ``EpisodeBatchSampler`` yields).

    Returns:
        ``(support, queries, classes)``: way x shot x D, way x query x D, and the way labels
        (sorted), so row i of both is class ``classes[i]``.
    """
    classes, counts = torch.unique(labels, return_counts=True)
    if not bool((counts == shot + query).all()):
        bad = int(counts[counts != shot + query][0])
        raise ToolkitError(f"prototypical loss: every class of an episode needs shot+query = {shot}+{query} = "
                           f"{shot + query} items; one has {bad}")
    order = torch.sort(labels, stable=True).indices  # class-major, batch order kept within a class
    grouped = embeddings[order].reshape(len(classes), shot + query, -1)  # way x (shot+query) x D
    return grouped[:, :shot], grouped[:, shot:], classes


class PrototypicalLoss(nn.Module):
    """Cross-entropy of queries over the episode's prototypes.

    Args:
        shot: support items per class (K).
        query: query items per class.
        distance: "euclidean" (Snell et al.'s squared Euclidean, Eq. 2) or "cosine" (cosine
            similarity times the learned scale ``exp(log_scale)``).
        init_scale: the cosine variant's initial scale (10, as in Chen et al. 2019's cosine classifier).

    ``active_fraction`` of the output is the fraction of queries whose nearest prototype is
    wrong (the episode's error rate); ``num_terms`` is the number of queries.
    """

    def __init__(self, shot: int = 1, query: int = 5, distance: str = "euclidean", init_scale: float = 10.0) -> None:
        super().__init__()
        if shot < 1 or query < 1:
            raise ToolkitError(f"prototypical loss needs shot >= 1 and query >= 1; got shot={shot}, query={query}")
        if distance not in PROTO_DISTANCES:
            raise ToolkitError(f"unknown prototypical distance {distance!r}; valid: 'euclidean', 'cosine'")
        if not init_scale > 0:
            raise ToolkitError(f"init_scale must be > 0; got {init_scale}")
        self.shot, self.query, self.distance = shot, query, distance
        # Learned temperature, in log space so it stays positive (cosine only).
        self.log_scale = nn.Parameter(torch.tensor(math.log(init_scale))) if distance == "cosine" else None

    def logits(self, support: Tensor, queries: Tensor) -> Tensor:
        """Class scores of every query: (way * query) x way, rows class-major like ``queries``."""
        prototypes = support.float().mean(dim=1)  # way x D, Eq. 1
        flat = queries.float().reshape(-1, queries.shape[-1])  # (way * query) x D
        if self.log_scale is None:
            return -torch.cdist(flat, prototypes).pow(2)  # Eq. 2: -||f(x) - c_k||^2
        cosine = F.normalize(flat, dim=1) @ F.normalize(prototypes, dim=1).T
        return self.log_scale.exp() * cosine

    def forward(self, embeddings: Tensor, labels: Tensor, weights: Tensor | None = None) -> LossOutput:
        """Loss of one episode batch.

        Args:
            embeddings: N x D with N = way * (shot + query).
            labels: N int64 labels; each class exactly ``shot + query`` times.
            weights: optional per-item weights; a query's term is multiplied by its weight and
                the mean stays over the number of queries.
        """
        check_batch(embeddings, labels, weights)
        support, queries, classes = split_episode(embeddings, labels, self.shot, self.query)
        way = len(classes)
        if way < 2:
            raise ToolkitError(f"prototypical loss needs at least 2 classes per episode; got {way}")
        logits = self.logits(support, queries)
        target = torch.arange(way, device=embeddings.device).repeat_interleave(self.query)
        terms = F.cross_entropy(logits, target, reduction="none")
        if weights is not None:
            order = torch.sort(labels, stable=True).indices.reshape(way, -1)[:, self.shot:].reshape(-1)
            terms = terms * weights[order].to(terms.dtype)
        wrong = (logits.argmax(dim=1) != target).float().mean()
        return LossOutput(loss=terms.mean(), active_fraction=float(wrong), num_terms=int(terms.numel()))

    def extra_repr(self) -> str:
        return f"shot={self.shot}, query={self.query}, distance={self.distance!r}"
