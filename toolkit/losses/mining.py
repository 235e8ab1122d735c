"""Which pairs and triplets of a batch a loss trains on, as index tensors.

Selection is separate from the losses so that tests can check it directly and both losses
share it. Everything here works on labels (int64, N) and, where needed, a detached N x N
distance matrix from a `Distance` (smaller means closer); nothing loops over the batch in
Python. Selection never needs gradients: the losses index their own differentiable matrix
with the returned indices.

A triplet (a, p, n) is *valid* when labels[a] == labels[p], a != p and labels[n] != labels[a].

As in pytorch-metric-learning, a loss takes a *miner object* (`TripletMiner`, `PairMiner`) rather
than a strategy name; `triplet_miner` and `pair_miner` build one from a recipe's name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from toolkit.losses.registry import build_named


def all_pairs(labels: Tensor) -> tuple[Tensor, Tensor]:
    """Every unordered pair i < j of the batch.

    Args:
        labels: Class of each sample, N.

    Returns:
        (i, j), each of length N (N - 1) / 2, in row-major order.
    """
    n = labels.shape[0]
    i, j = torch.triu_indices(n, n, offset=1, device=labels.device)
    return i, j


def balanced_pairs(
    labels: Tensor, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """A random subset of pairs with as many positive (same-class) as negative pairs.

    Takes k = min(#positive pairs, #negative pairs) of each kind, drawn uniformly without
    replacement. In the usual M-per-class batch positives are the rarer kind, so this keeps
    every positive pair and draws as many negatives. A batch of one class (or of singletons
    only) has k = 0 and gives no pairs.

    Args:
        labels: Class of each sample, N.
        generator: Source of randomness (the global one when None). Its device is where
            the permutations are drawn.

    Returns:
        (i, j) with i < j, 2k pairs in row-major order.
    """
    i, j = all_pairs(labels)
    same = labels[i] == labels[j]
    positive = same.nonzero().squeeze(1)
    negative = (~same).nonzero().squeeze(1)
    k = min(positive.numel(), negative.numel())
    device = generator.device if generator is not None else torch.device("cpu")
    pick_positive = torch.randperm(positive.numel(), generator=generator, device=device)[:k]
    pick_negative = torch.randperm(negative.numel(), generator=generator, device=device)[:k]
    keep = torch.cat(
        [positive[pick_positive.to(labels.device)], negative[pick_negative.to(labels.device)]]
    ).sort().values
    return i[keep], j[keep]


def all_triplets(labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Every valid triplet of the batch (the candidates of "batch all", Hermans et al. 2017).

    Memory: a (#ordered positive pairs) x N boolean mask, under N^3 bytes (128 MiB at
    N = 512, reached only when nearly all samples share a class; about N^2 M bytes for an
    M-per-class batch), plus three int64 indices per valid triplet.

    Args:
        labels: Class of each sample, N.

    Returns:
        (anchors, positives, negatives), sorted by anchor, then positive, then negative.
    """
    positive, negative = _pair_masks(labels)
    anchors, positives = positive.nonzero(as_tuple=True)  # P pairs
    # Row r lists the negatives of pair r's anchor.
    pair, negatives = negative[anchors].nonzero(as_tuple=True)  # P x N mask
    return anchors[pair], positives[pair], negatives


def batch_hard(dist: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One triplet per anchor: its farthest positive and closest negative (Hermans et al. 2017).

    Anchors without a positive or without a negative in the batch are left out. Ties go to
    the lowest index.

    Args:
        dist: N x N distances between the batch's embeddings (smaller means closer).
        labels: Class of each sample, N.

    Returns:
        (anchors, positives, negatives), one entry per usable anchor, in anchor order.
    """
    dist = dist.detach()
    positive, negative = _pair_masks(labels)
    if labels.numel() == 0:  # argmax cannot reduce an empty row
        empty = labels.new_empty(0)
        return empty, empty, empty
    hardest_positive = dist.masked_fill(~positive, float("-inf")).argmax(dim=1)  # N
    hardest_negative = dist.masked_fill(~negative, float("inf")).argmin(dim=1)  # N
    anchors = (positive.any(dim=1) & negative.any(dim=1)).nonzero().squeeze(1)
    return anchors, hardest_positive[anchors], hardest_negative[anchors]


def semihard(dist: Tensor, labels: Tensor, margin: float) -> tuple[Tensor, Tensor, Tensor]:
    """Every valid triplet with d(a,p) < d(a,n) < d(a,p) + margin.

    The semi-hard negatives of FaceNet (Schroff et al. 2015, Sec. 3.2): farther than the
    positive but still inside the margin, so each selected triplet has a positive loss.
    All of them are kept, as pml's `TripletMarginMiner(type_of_triplets="semihard")` does
    (up to its boundary d(a,n) = d(a,p) + margin), not one negative per positive pair as in
    TensorFlow's `triplet_semihard_loss`. Memory as for `all_triplets`.

    Args:
        dist: N x N distances between the batch's embeddings (smaller means closer).
        labels: Class of each sample, N.
        margin: The triplet loss margin.

    Returns:
        (anchors, positives, negatives), sorted by anchor, then positive, then negative.
    """
    dist = dist.detach()
    anchors, positives, negatives = all_triplets(labels)
    to_positive = dist[anchors, positives]
    to_negative = dist[anchors, negatives]
    keep = (to_positive < to_negative) & (to_negative < to_positive + margin)
    return anchors[keep], positives[keep], negatives[keep]


def count_active_triplets(dist: Tensor, labels: Tensor, margin: float) -> tuple[int, int]:
    """How many valid triplets have a positive loss, i.e. d(a,n) < d(a,p) + margin.

    Counts without listing the triplets: each anchor's negative distances are sorted once
    and a binary search counts, for every positive, the negatives under d(a,p) + margin.
    O(N^2 log N) time and O(N^2) memory, so it is affordable for any mining strategy.

    Args:
        dist: N x N distances between the batch's embeddings (smaller means closer).
        labels: Class of each sample, N.
        margin: The triplet loss margin.

    Returns:
        (active, valid): the number of valid triplets with positive loss, and of all valid
        triplets.
    """
    dist = dist.detach()
    positive, negative = _pair_masks(labels)
    # Non-negatives sort to the end as +inf and are never below a finite threshold.
    negative_sorted = dist.masked_fill(~negative, float("inf")).sort(dim=1).values  # NxN
    # Same expression as the loss's threshold, so "active" agrees with loss > 0 bit for bit.
    threshold = (dist + margin).contiguous()  # NxN, row a: d(a, p) + margin
    below = torch.searchsorted(negative_sorted, threshold)  # NxN, #negatives strictly below
    active = int(below[positive].sum())
    valid = int((positive.sum(dim=1) * negative.sum(dim=1)).sum())
    return active, valid


def _pair_masks(labels: Tensor) -> tuple[Tensor, Tensor]:
    """N x N masks of positive pairs (same class, not itself) and negative pairs."""
    same = labels.unsqueeze(0) == labels.unsqueeze(1)  # NxN
    itself = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    return same & ~itself, ~same


class TripletMiner(ABC):
    """Chooses the triplets of a batch a triplet loss trains on.

    Attributes:
        name: The recipe's name for it (``finetune.mining``).
        nonzero_only: Whether the loss averages over the *active* chosen triplets only (pml's
            ``AvgNonZeroReducer``) instead of over all of them, zero terms included.
    """

    name: str
    nonzero_only: bool = False

    @abstractmethod
    def mine(self, dist: Tensor, labels: Tensor, margin: float) -> tuple[Tensor, Tensor, Tensor]:
        """(anchors, positives, negatives) from N x N distances, N labels and the loss's margin."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class AllTriplets(TripletMiner):
    """Batch all (Hermans et al. 2017, Sec. 2): every valid triplet, averaged over the active ones."""

    name = "all"
    nonzero_only = True

    def mine(self, dist: Tensor, labels: Tensor, margin: float) -> tuple[Tensor, Tensor, Tensor]:
        return all_triplets(labels)


class HardTriplets(TripletMiner):
    """Batch hard (Hermans et al. 2017, Sec. 2): per anchor its farthest positive and closest negative."""

    name = "hard"

    def mine(self, dist: Tensor, labels: Tensor, margin: float) -> tuple[Tensor, Tensor, Tensor]:
        return batch_hard(dist, labels)


class SemihardTriplets(TripletMiner):
    """Semi-hard (Schroff et al. 2015, Sec. 3.2): d(a,p) < d(a,n) < d(a,p) + margin."""

    name = "semihard"

    def mine(self, dist: Tensor, labels: Tensor, margin: float) -> tuple[Tensor, Tensor, Tensor]:
        return semihard(dist, labels, margin)


class PairMiner(ABC):
    """Chooses the pairs i < j of a batch a pair loss trains on; ``name`` is ``finetune.pairs``'s value."""

    name: str

    @abstractmethod
    def mine(self, labels: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(i, j) for N labels; ``generator`` is the randomness of miners that draw."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class AllPairs(PairMiner):
    """Every unordered pair of the batch (`all_pairs`)."""

    name = "all"

    def mine(self, labels: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        return all_pairs(labels)


class BalancedPairs(PairMiner):
    """As many random negative as positive pairs (`balanced_pairs`)."""

    name = "balanced"

    def mine(self, labels: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        return balanced_pairs(labels, generator)


TRIPLET_MINERS: dict[str, type[TripletMiner]] = {m.name: m for m in (AllTriplets, HardTriplets, SemihardTriplets)}
PAIR_MINERS: dict[str, type[PairMiner]] = {m.name: m for m in (AllPairs, BalancedPairs)}


def triplet_miner(name: str) -> TripletMiner:
    """The triplet miner a recipe names: "all", "hard" or "semihard" (a one-line ToolkitError otherwise)."""
    return build_named("triplet mining", TRIPLET_MINERS, name)


def pair_miner(name: str) -> PairMiner:
    """The pair miner a recipe names: "all" or "balanced" (a one-line ToolkitError otherwise)."""
    return build_named("contrastive pairs mode", PAIR_MINERS, name)
