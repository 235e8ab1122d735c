"""The contract the pair and triplet losses share: the batch they take, the result they give."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from toolkit.errors import ToolkitError


@dataclass(frozen=True)
class LossOutput:
    """The result of a pair or triplet loss on one batch.

    Attributes:
        loss: Scalar tensor to call `backward` on.
        active_fraction: Fraction of the batch's candidate pairs or triplets whose loss term
            is strictly positive (each loss's docstring says which candidates). 0.0 when
            there are none.
        num_terms: Number of terms the loss is the mean of (0 when the loss is the zero loss).
    """

    loss: Tensor
    active_fraction: float
    num_terms: int

    @classmethod
    def empty(cls, embeddings: Tensor, active_fraction: float = 0.0) -> LossOutput:
        """A zero loss that is still connected to `embeddings`.

        Multiplying by 0 rather than returning `torch.zeros(())` keeps a grad_fn, so
        `loss.backward()` works (giving zero gradients) on a batch without usable pairs or
        triplets, and distributed training keeps every parameter in the graph.
        """
        return cls(loss=(embeddings * 0).sum(), active_fraction=active_fraction, num_terms=0)


def check_batch(embeddings: Tensor, labels: Tensor, weights: Tensor | None) -> None:
    """Raise a one-line ToolkitError unless the shapes are N x D, N and (optionally) N."""
    if embeddings.ndim != 2:
        raise ToolkitError(
            f"embeddings must be 2-D (N x D), got shape {tuple(embeddings.shape)}"
        )
    n = embeddings.shape[0]
    if labels.shape != (n,):
        raise ToolkitError(
            f"labels must have shape ({n},) to match embeddings, got {tuple(labels.shape)}"
        )
    if weights is not None and weights.shape != (n,):
        raise ToolkitError(
            f"weights must have shape ({n},) to match embeddings, got {tuple(weights.shape)}"
        )
