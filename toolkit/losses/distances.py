"""Pairwise distances for the metric-learning losses; smaller always means closer.

Follows pytorch-metric-learning's split: a loss asks its `Distance` for an N x M matrix and
never needs to know which metric it is. Unlike pml's `CosineSimilarity`, the cosine object
here returns a *distance* (1 - cosine similarity), so every `Distance` shares one sign
convention and no loss needs an "is this inverted?" branch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor

from toolkit.errors import ToolkitError
from toolkit.losses.registry import build_named


class Distance(ABC):
    """A pairwise distance between two sets of embeddings (smaller means closer)."""

    name: str

    @abstractmethod
    def pairwise(self, x: Tensor, y: Tensor) -> Tensor:
        """Distances between every row of `x` and every row of `y`.

        Args:
            x: Embeddings, N x D.
            y: Embeddings, M x D.

        Returns:
            N x M distances. Half-precision inputs are computed and returned in float32.
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class EuclideanDistance(Distance):
    """L2 distance ||x_i - y_j||, computed from the Gram expansion ||x||^2 + ||y||^2 - 2 x.y.

    Two numerical guards, both needed for training with it:
    - rounding in the expansion can make a squared distance slightly negative, and
    - d sqrt(s)/ds is infinite at s = 0, so identical rows (the diagonal, or an image drawn
      twice by an oversampling batch sampler) would give 0 * inf = NaN gradients.
    Squared distances at or below `eps` therefore map to exactly 0 through a masked sqrt whose
    gradient there is 0 (a valid subgradient of the norm at 0). When `y is x` the diagonal is
    set to exactly 0 instead of the expansion's rounding error.

    Args:
        eps: Squared distances <= eps count as zero distance.
    """

    name = "euclidean"

    def __init__(self, eps: float = 1e-12) -> None:
        self.eps = eps

    def pairwise(self, x: Tensor, y: Tensor) -> Tensor:
        _check_shapes(x, y)
        same = y is x
        with torch.autocast(device_type=x.device.type, enabled=False):
            x, y = _at_least_float32(x), _at_least_float32(y)
            squared = (
                x.pow(2).sum(1, keepdim=True)  # Nx1
                + y.pow(2).sum(1).unsqueeze(0)  # 1xM
                - 2.0 * (x @ y.T)  # NxM
            )
            if same:
                eye = torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
                squared = squared.masked_fill(eye, 0.0)
            nonzero = squared > self.eps
            # The clamp matters even where the mask discards the root: sqrt's backward divides
            # the (zero) incoming gradient by 2 sqrt(s), which is 0 / 0 = NaN at s = 0.
            root = squared.clamp(min=self.eps).sqrt()
            return torch.where(nonzero, root, torch.zeros_like(root))


class CosineDistance(Distance):
    """Cosine distance 1 - cos(x_i, y_j), in [0, 2].

    Rows are L2-normalised first (zero rows stay zero, giving distance 1 to everything).
    """

    name = "cosine"

    def pairwise(self, x: Tensor, y: Tensor) -> Tensor:
        _check_shapes(x, y)
        with torch.autocast(device_type=x.device.type, enabled=False):
            x, y = _at_least_float32(x), _at_least_float32(y)
            return 1.0 - F.normalize(x, dim=1) @ F.normalize(y, dim=1).T  # NxM


DISTANCES: dict[str, type[Distance]] = {
    EuclideanDistance.name: EuclideanDistance,
    CosineDistance.name: CosineDistance,
}


def get_distance(name: str) -> Distance:
    """Build a distance by name: "euclidean" or "cosine".

    Raises:
        ToolkitError: For any other name.
    """
    return build_named("distance", DISTANCES, name)


def _at_least_float32(x: Tensor) -> Tensor:
    # Distances near zero decide which pairs and triplets are active; fp16/bf16 rounding
    # (about 1e-2 on a unit vector's Gram entry) would decide that instead.
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def _check_shapes(x: Tensor, y: Tensor) -> None:
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ToolkitError(
            f"distances need two 2-D embedding tensors N x D and M x D with the same D, "
            f"got shapes {tuple(x.shape)} and {tuple(y.shape)}"
        )
