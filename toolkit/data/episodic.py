"""N-way K-shot episode batches for prototypical training (Snell et al. 2017, Algorithm 1).

An episode is ``way`` classes drawn without replacement and, per class, ``shot + query`` distinct
images drawn at random (never the first images in dataset order), contiguous in the batch with
the support first. A class with fewer than ``shot + query`` images cannot give distinct support
and query images, so it is left out of the episodes (``skipped`` counts them): repeating its
images would put a support image among its own queries, a query answered by itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from toolkit.data.sampling import ClassBatchSampler
from toolkit.errors import ToolkitError


class EpisodeBatchSampler(ClassBatchSampler):
    """Yields ``way * (shot + query)`` indices per episode: class-major, ``shot`` support then ``query`` queries.

    Every rank builds the same global episode; the objective gives each rank its contiguous slice
    of ``way / world_size`` whole classes (``FinetuneObjective.plan``).

    Args:
        labels: class of every dataset item.
        way, shot, query: the episode's N, K and queries per class.
        episodes: episodes per epoch; default ceil(images of the usable classes / (way * (shot + query))),
            so an epoch sees about as many images as the data holds.
        seed: base seed; episodes depend only on (seed, epoch) (call ``set_epoch``, see ``ClassBatchSampler``).
        world_size: processes sharing each episode; ``way`` must be divisible by it so every rank
            holds whole classes.

    Raises:
        ToolkitError: bad way/shot/query, or fewer than ``way`` classes with ``shot + query`` images.
    """

    def __init__(self, labels: Sequence[int], way: int, shot: int, query: int, episodes: int | None = None,
                 seed: int = 0, world_size: int = 1) -> None:
        for name, value in (("way", way), ("shot", shot), ("query", query)):
            if value < 1:
                raise ToolkitError(f"finetune.{name} must be >= 1; got {value}")
        if way < 2:
            raise ToolkitError(f"finetune.way={way}: an episode needs at least 2 classes")
        if way % world_size:
            raise ToolkitError(f"finetune.way={way} must be divisible by the {world_size} processes")
        if episodes is not None and episodes < 1:
            raise ToolkitError(f"episodes must be >= 1; got {episodes}")
        label_array = np.asarray(labels, dtype=np.int64)
        classes, counts = np.unique(label_array, return_counts=True)
        needed = shot + query
        usable = classes[counts >= needed]
        self.skipped = int(len(classes) - len(usable))  # classes too small for distinct support and queries
        self.skipped_images = int(counts[counts < needed].sum())
        if len(classes) < way:
            raise ToolkitError(f"finetune.way={way} is larger than the {len(classes)} training classes; "
                               f"use way <= {len(classes)}")
        if len(usable) < way:
            raise ToolkitError(
                f"finetune.way={way}: only {len(usable)} of the {len(classes)} training classes have "
                f"shot+query = {shot}+{query} = {needed} images; lower finetune.way, finetune.shot or finetune.query")
        self.way, self.shot, self.query, self.world_size = way, shot, query, world_size
        self.batch_size = way * needed
        usable_images = int(counts[counts >= needed].sum())
        super().__init__([np.flatnonzero(label_array == c) for c in usable], way,
                         episodes if episodes is not None else math.ceil(usable_images / self.batch_size), seed)

    def _draw(self, rng: np.random.Generator, pool: np.ndarray) -> np.ndarray:
        """shot + query distinct images of one class in random order: the first ``shot`` are the support."""
        return rng.choice(pool, self.shot + self.query, replace=False)

    def describe_skipped(self) -> str | None:
        """The counted line for classes left out, or None when every class is used."""
        if not self.skipped:
            return None
        return (f"proto episodes: {self.skipped} training classes with fewer than shot+query = "
                f"{self.shot}+{self.query} images ({self.skipped_images} images) are left out of the episodes")
