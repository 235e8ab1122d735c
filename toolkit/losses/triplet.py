"""Triplet margin loss with batch-all, batch-hard and semi-hard mining.

L(a, p, n) = max(d(a,p) - d(a,n) + margin, 0) (Schroff et al. 2015, Sec. 3), with d any
`Distance` (Euclidean or cosine) and triplets mined inside the batch by
`toolkit.losses.mining`. FaceNet writes squared Euclidean distances; like Hermans et al. 2017
(who found it more stable) and pml, d here is the plain, unsquared distance.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from toolkit.errors import ToolkitError
from toolkit.losses.distances import Distance, EuclideanDistance
from toolkit.losses.mining import AllTriplets, TripletMiner, count_active_triplets
from toolkit.losses.output import LossOutput, check_batch


class TripletLoss(nn.Module):
    """Triplet margin loss over triplets mined from the batch.

    The loss asks its `Distance` for the batch's distances and its `TripletMiner` for the
    triplets (as pytorch-metric-learning's losses do). Mining and reduction, per miner:
    - `AllTriplets` (batch all, Hermans et al. 2017, Sec. 2): every valid triplet; the loss is the
      mean over the *active* ones (positive loss), so easy triplets do not dilute it.
      Same as pml's `TripletMarginLoss` with its default `AvgNonZeroReducer`.
    - `HardTriplets` (batch hard, Hermans et al. 2017, Sec. 2): per anchor the farthest positive and
      the closest negative; the mean over every anchor having both, zero terms included.
    - `SemihardTriplets` (Schroff et al. 2015, Sec. 3.2): every valid triplet with
      d(a,p) < d(a,n) < d(a,p) + margin; the mean over them (all are active).

    `active_fraction` is always the fraction of *all valid triplets of the batch* with a
    positive loss, whatever the strategy trains on, so it is comparable across strategies.
    `num_terms` is the number of triplets the mean is taken over.

    Args:
        margin: The margin alpha; >= 0. 0.2 is FaceNet's value for L2-normalised embeddings.
        distance: The `Distance` (Euclidean when None).
        miner: The `TripletMiner` (batch all when None).
    """

    def __init__(
        self, margin: float = 0.2, distance: Distance | None = None, miner: TripletMiner | None = None
    ) -> None:
        super().__init__()
        if not margin >= 0:
            raise ToolkitError(f"triplet margin must be >= 0, got {margin}")
        self.margin = margin
        self.distance = distance if distance is not None else EuclideanDistance()
        self.miner = miner if miner is not None else AllTriplets()

    def forward(
        self, embeddings: Tensor, labels: Tensor, weights: Tensor | None = None
    ) -> LossOutput:
        """Triplet loss of one batch.

        Args:
            embeddings: N x D, usually L2-normalised.
            labels: Class of each sample, int64, N.
            weights: Optional per-sample weights, N; a triplet's term is multiplied by its
                anchor's weight. The denominator stays the number of terms (as listed in the
                class docstring), not the weights' sum.

        Returns:
            The loss, the active fraction of all valid triplets and the number of terms.
            Without valid triplets, or when the strategy selects none (no active triplet
            for batch all, no semi-hard negative for semi-hard), the loss is a zero connected
            to `embeddings`.
        """
        check_batch(embeddings, labels, weights)
        dist = self.distance.pairwise(embeddings, embeddings)  # NxN
        active, valid = count_active_triplets(dist, labels, self.margin)
        active_fraction = active / valid if valid else 0.0

        anchors, positives, negatives = self.miner.mine(dist, labels, self.margin)

        # Written as (d(a,p) + margin) - d(a,n) so that "loss > 0" is decided exactly as in
        # count_active_triplets and the semi-hard test.
        terms = F.relu((dist[anchors, positives] + self.margin) - dist[anchors, negatives])
        if self.miner.nonzero_only:
            active_terms = terms > 0
            anchors, terms = anchors[active_terms], terms[active_terms]
        if terms.numel() == 0:
            return LossOutput.empty(embeddings, active_fraction)
        if weights is not None:
            terms = terms * weights[anchors].to(terms.dtype)
        return LossOutput(
            loss=terms.mean(), active_fraction=active_fraction, num_terms=terms.numel()
        )

    def extra_repr(self) -> str:
        return f"margin={self.margin}, distance={self.distance!r}, miner={self.miner!r}"
