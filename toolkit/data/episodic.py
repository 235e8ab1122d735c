"""N-way K-shot episode batches for prototypical training (Snell et al. 2017, Algorithm 1).

An episode is ``way`` classes drawn without replacement and, per class, ``shot + query`` distinct
images (all of them plus repeats for a class with fewer, as in ``ClassBalancedBatchSampler``),
contiguous in the batch with the support first. That is exactly an "M per class" batch with
M = shot + query and way classes, so the sampler is that one, named and sized for episodes.
"""

from __future__ import annotations

from collections.abc import Sequence

from toolkit.data.sampling import ClassBalancedBatchSampler
from toolkit.errors import ToolkitError


class EpisodeBatchSampler(ClassBalancedBatchSampler):
    """Yields ``way * (shot + query)`` indices per batch: class-major, ``shot`` support then ``query`` queries.

    Args:
        labels: class of every dataset item.
        way, shot, query: the episode's N, K and queries per class.
        episodes: episodes per epoch; default ceil(len(labels) / (way * (shot + query))), so an
            epoch sees about as many images as the data holds.
        seed: base seed; batches depend only on (seed, epoch) (call ``set_epoch``).
        rank, world_size: as in ``ClassBalancedBatchSampler``; ``way`` must be divisible by
            ``world_size`` so every rank holds whole classes.
    """

    def __init__(self, labels: Sequence[int], way: int, shot: int, query: int, episodes: int | None = None,
                 seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        for name, value in (("way", way), ("shot", shot), ("query", query)):
            if value < 1:
                raise ToolkitError(f"finetune.{name} must be >= 1; got {value}")
        if way < 2:
            raise ToolkitError(f"finetune.way={way}: an episode needs at least 2 classes")
        if way % world_size:
            raise ToolkitError(f"finetune.way={way} must be divisible by the {world_size} processes")
        super().__init__(labels, shot + query, way * (shot + query), episodes, seed, rank, world_size)
        self.way, self.shot, self.query = way, shot, query
