"""Contrastive loss on pairs formed inside the batch (Hadsell, Chopra & LeCun, CVPR 2006)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toolkit.errors import ToolkitError
from toolkit.losses.distances import Distance, EuclideanDistance
from toolkit.losses.mining import AllPairs, PairMiner
from toolkit.losses.output import LossOutput, check_batch


class ContrastiveLoss(nn.Module):
    """L = Y D^2 + (1 - Y) max(margin - D, 0)^2, averaged over the selected pairs.

    D is the loss's `Distance` between the two embeddings of a pair (Euclidean, the paper's, by
    default; `CosineDistance` gives 1 - cos, in [0, 2]) and Y = 1 when they
    share a class. This is Eq. 4 of Hadsell et al. 2006 *without its 1/2 factors*, so the
    loss and its gradients are exactly twice the paper's; note also that the paper writes
    Y = 0 for similar pairs, the reverse of Y here. (pml's `ContrastiveLoss` is a different
    loss: unsquared hinges, averaged over its non-zero terms only.)

    Pair selection is the loss's `PairMiner` (see `toolkit.losses.mining`):
    - `AllPairs`: every unordered pair i < j of the batch.
    - `BalancedPairs`: min(#positive, #negative) pairs of each kind drawn at random, i.e. all
      positives plus as many random negatives in an M-per-class batch.

    A pair is *active* when its (unweighted) term is strictly positive: a positive pair at a
    non-zero distance, or a negative pair closer than the margin. `active_fraction` is taken
    over the selected pairs.

    Args:
        margin: Negative pairs farther apart than this cost nothing. Must be > 0.
        distance: The `Distance` (Euclidean when None).
        miner: The `PairMiner` (all pairs when None).
    """

    def __init__(
        self, margin: float = 1.0, distance: Distance | None = None, miner: PairMiner | None = None
    ) -> None:
        super().__init__()
        if not margin > 0:
            raise ToolkitError(f"contrastive margin must be > 0, got {margin}")
        self.margin = margin
        self.distance = distance if distance is not None else EuclideanDistance()
        self.miner = miner if miner is not None else AllPairs()

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        weights: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> LossOutput:
        """Mean contrastive loss over the batch's selected pairs.

        Args:
            embeddings: N x D, usually L2-normalised.
            labels: Class of each sample, int64, N.
            weights: Optional per-sample weights, N (e.g. inverse class frequency, see
                `toolkit.data.sampling.inverse_frequency_weights`). A pair's term is multiplied by
                the *mean* of its two samples' weights, so a positive pair gets its class's
                weight; the loss is still divided by the number of pairs, not by the weights'
                sum.
            generator: Randomness for a miner that draws (`BalancedPairs`); others ignore it.

        Returns:
            The loss, the fraction of active selected pairs and the number of pairs. With no
            pairs (N < 2, or balanced pairs on a batch lacking one kind) the loss is a zero
            connected to `embeddings`.
        """
        check_batch(embeddings, labels, weights)
        i, j = self.miner.mine(labels, generator)
        if i.numel() == 0:
            return LossOutput.empty(embeddings)

        dist = self.distance.pairwise(embeddings, embeddings)[i, j]  # P
        same = labels[i] == labels[j]  # P
        terms = torch.where(same, dist.pow(2), F.relu(self.margin - dist).pow(2))  # P
        active = terms > 0
        if weights is not None:
            terms = terms * (weights[i] + weights[j]).to(terms.dtype) / 2
        return LossOutput(
            loss=terms.mean(),
            active_fraction=int(active.sum()) / active.numel(),
            num_terms=terms.numel(),
        )

    def extra_repr(self) -> str:
        return f"margin={self.margin}, distance={self.distance!r}, miner={self.miner!r}"
