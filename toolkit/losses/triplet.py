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
from toolkit.losses.distances import Distance, get_distance
from toolkit.losses.mining import all_triplets, batch_hard, count_active_triplets, semihard
from toolkit.losses.output import LossOutput, check_batch

MINING_STRATEGIES = ("all", "hard", "semihard")


class TripletLoss(nn.Module):
    """Triplet margin loss over triplets mined from the batch.

    Mining and reduction, per strategy:
    - "all" (batch all, Hermans et al. 2017, Sec. 2): every valid triplet; the loss is the
      mean over the *active* ones (positive loss), so easy triplets do not dilute it.
      Same as pml's `TripletMarginLoss` with its default `AvgNonZeroReducer`.
    - "hard" (batch hard, Hermans et al. 2017, Sec. 2): per anchor the farthest positive and
      the closest negative; the mean over every anchor having both, zero terms included.
    - "semihard" (Schroff et al. 2015, Sec. 3.2): every valid triplet with
      d(a,p) < d(a,n) < d(a,p) + margin; the mean over them (all are active).

    `active_fraction` is always the fraction of *all valid triplets of the batch* with a
    positive loss, whatever the strategy trains on, so it is comparable across strategies.
    `num_terms` is the number of triplets the mean is taken over.

    Args:
        margin: The margin alpha; >= 0. 0.2 is FaceNet's value for L2-normalised embeddings.
        distance: A `Distance` or its name ("euclidean", "cosine").
        mining: "all", "hard" or "semihard".
    """

    def __init__(
        self, margin: float = 0.2, distance: Distance | str = "euclidean", mining: str = "all"
    ) -> None:
        super().__init__()
        if not margin >= 0:
            raise ToolkitError(f"triplet margin must be >= 0, got {margin}")
        if mining not in MINING_STRATEGIES:
            raise ToolkitError(
                f"unknown triplet mining {mining!r}; valid: 'all', 'hard', 'semihard'"
            )
        self.margin = margin
        self.distance = get_distance(distance) if isinstance(distance, str) else distance
        self.mining = mining

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
            for "all", no semi-hard negative for "semihard"), the loss is a zero connected
            to `embeddings`.
        """
        check_batch(embeddings, labels, weights)
        dist = self.distance.pairwise(embeddings, embeddings)  # NxN
        active, valid = count_active_triplets(dist, labels, self.margin)
        active_fraction = active / valid if valid else 0.0

        if self.mining == "all":
            anchors, positives, negatives = all_triplets(labels)
        elif self.mining == "hard":
            anchors, positives, negatives = batch_hard(dist, labels)
        else:
            anchors, positives, negatives = semihard(dist, labels, self.margin)

        # Written as (d(a,p) + margin) - d(a,n) so that "loss > 0" is decided exactly as in
        # count_active_triplets and the semi-hard test.
        terms = F.relu((dist[anchors, positives] + self.margin) - dist[anchors, negatives])
        if self.mining == "all":
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
        return f"margin={self.margin}, distance={self.distance!r}, mining={self.mining!r}"
