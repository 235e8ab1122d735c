"""Normalised softmax over learned class proxies (Zhai & Wu 2019, "Classification is a Strong
Baseline for Deep Metric Learning", BMVC; the cosine classifier of Chen et al. 2019, "A Closer
Look at Few-shot Classification", Baseline++).

Every training class c has a learned proxy w_c. An embedding x is scored against every proxy by
cosine similarity divided by a temperature T (Zhai & Wu's Eq. 2: both x and w_c are
l2-normalised, T = 0.05 in their experiments), and the loss is the cross-entropy of the true
class over all training classes. Unlike pair, triplet and episode losses, every step compares
each image with every class, which is what makes it "classification-shaped": on few classes with
many images (a long tail) it is the supervised baseline's objective on the metric's geometry. The
proxies are thrown away after training; the encoder's embedding is what kNN, prototypes and
export use, as for the other losses.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from toolkit.errors import ToolkitError
from toolkit.losses.output import LossOutput, check_batch


class NormalizedSoftmaxLoss(nn.Module):
    """Cross-entropy of ``cos(x, w_c) / temperature`` over one learned proxy per training class.

    Args:
        num_classes: training classes (labels are 0 .. num_classes - 1).
        dim: embedding dimension.
        temperature: T of Zhai & Wu's Eq. 2 (0.05 there).

    ``active_fraction`` of the output is the fraction of the batch whose nearest proxy is not its
    own class (the training error); ``num_terms`` is the batch size.
    """

    def __init__(self, num_classes: int, dim: int, temperature: float = 0.05) -> None:
        super().__init__()
        if num_classes < 2:
            raise ToolkitError(f"normalised softmax needs at least 2 training classes; got {num_classes}")
        if dim < 1:
            raise ToolkitError(f"normalised softmax needs an embedding dimension >= 1; got {dim}")
        if not temperature > 0:
            raise ToolkitError(f"finetune.softmax_temperature must be > 0; got {temperature}")
        self.temperature = temperature
        # Zhai & Wu initialise the proxies at random; only their directions matter.
        self.proxies = nn.Parameter(torch.randn(num_classes, dim) / math.sqrt(dim))

    def logits(self, embeddings: Tensor) -> Tensor:
        """N x num_classes scores ``cos(x_i, w_c) / T``."""
        return F.normalize(embeddings.float(), dim=1) @ F.normalize(self.proxies, dim=1).T / self.temperature

    def forward(self, embeddings: Tensor, labels: Tensor, weights: Tensor | None = None) -> LossOutput:
        """Mean cross-entropy of the batch; ``weights`` (optional, N) multiply each image's term."""
        check_batch(embeddings, labels, weights)
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.proxies.shape[0]):
            raise ToolkitError(f"normalised softmax: labels must lie in 0..{self.proxies.shape[0] - 1}; "
                               f"got {int(labels.min())}..{int(labels.max())}")
        if embeddings.shape[1] != self.proxies.shape[1]:
            raise ToolkitError(f"normalised softmax: embeddings have {embeddings.shape[1]} dimensions, "
                               f"the proxies {self.proxies.shape[1]}")
        if embeddings.shape[0] == 0:
            return LossOutput.empty(embeddings)
        logits = self.logits(embeddings)
        terms = F.cross_entropy(logits, labels, reduction="none")
        if weights is not None:
            terms = terms * weights.to(terms.dtype)
        wrong = (logits.argmax(dim=1) != labels).float().mean()
        return LossOutput(loss=terms.mean(), active_fraction=float(wrong), num_terms=int(terms.numel()))

    def extra_repr(self) -> str:
        return f"classes={self.proxies.shape[0]}, dim={self.proxies.shape[1]}, temperature={self.temperature:g}"
