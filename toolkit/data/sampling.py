"""Class-balanced ("M per class") batches and inverse-frequency weights for metric learning.

Pair and triplet losses need positives in every batch; a uniformly shuffled batch from a
long-tailed data set has few. The sampler below builds each batch from K distinct classes
with exactly M samples each, like pytorch-metric-learning's `MPerClassSampler` and the
P x K batches of Hermans et al. 2017 (Sec. 2).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Sampler

from toolkit.errors import ToolkitError


class ClassBatchSampler(Sampler[list[int]], ABC):
    """Batches of ``classes_per_batch`` classes drawn without replacement, indices drawn per class.

    The shared frame of `ClassBalancedBatchSampler` and `EpisodeBatchSampler`
    (``toolkit.data.episodic``): batches depend only on (seed, epoch), so call `set_epoch` before
    each epoch, as with `DistributedSampler`; iterating twice in one epoch repeats the same batches.
    A subclass says how one class's indices are drawn (`_draw`) and which part of the global batch
    this process takes (`_local`, the whole batch by default).

    Args:
        pools: Dataset indices of each class that can be drawn.
        classes_per_batch: Classes in each batch.
        num_batches: Batches per epoch.
        seed: Base seed.
    """

    def __init__(self, pools: list[np.ndarray], classes_per_batch: int, num_batches: int, seed: int) -> None:
        self._pools = pools
        self.classes_per_batch = classes_per_batch
        self.num_batches = num_batches
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches `__iter__` yields next."""
        if epoch < 0:
            raise ToolkitError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch

    def __len__(self) -> int:
        """Batches per epoch (the same on every rank)."""
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        # SeedSequence mixes (seed, epoch) so nearby pairs give unrelated streams, identically
        # on every rank and every platform.
        rng = np.random.default_rng([self.seed, self.epoch])
        for _ in range(self.num_batches):
            chosen = rng.choice(len(self._pools), self.classes_per_batch, replace=False)
            batch = np.concatenate([self._draw(rng, self._pools[c]) for c in chosen])
            yield self._local(batch).tolist()

    @abstractmethod
    def _draw(self, rng: np.random.Generator, pool: np.ndarray) -> np.ndarray:
        """The indices one chosen class contributes, contiguous in the batch."""

    def _local(self, batch: np.ndarray) -> np.ndarray:
        """This process's part of the global batch."""
        return batch


class ClassBalancedBatchSampler(ClassBatchSampler):
    """Yields batches of dataset indices with batch_size // m_per_class classes, M of each.

    Each batch draws its classes uniformly without replacement from all classes, so over an
    epoch a class with 2 images is seen about as often as one with 2,000. Within a class:
    - with at least M images, M distinct images are drawn (without replacement);
    - with fewer, every image is taken once and the rest of the M slots are drawn with
      replacement, so the batch holds repeated indices (augmentation makes the views differ).
    A class's M indices are contiguous in the batch. Batches depend only on (seed, epoch)
    (`ClassBatchSampler`).

    Distributed training: every rank builds the same global batch of `batch_size` indices
    and yields its own contiguous slice of batch_size // world_size. When that slice size is
    a multiple of m_per_class, each rank holds whole classes, so a loss computed per rank
    still sees M samples of each of its classes.

    Use it as a `DataLoader(dataset, batch_sampler=sampler)`.

    Args:
        labels: Class of every dataset item, in dataset order.
        m_per_class: M, samples of each class in a batch; >= 1.
        batch_size: Global batch size; a multiple of m_per_class and of world_size.
        num_batches: Batches per epoch; default ceil(len(labels) / batch_size).
        seed: Base seed; >= 0.
        rank: This process's rank, 0 <= rank < world_size.
        world_size: Number of processes sharing each global batch.

    Raises:
        ToolkitError: For any argument that cannot give such batches (one line, naming it).
    """

    def __init__(
        self,
        labels: Sequence[int],
        m_per_class: int,
        batch_size: int,
        num_batches: int | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        label_array = np.asarray(labels, dtype=np.int64)
        _check_arguments(label_array, m_per_class, batch_size, num_batches, seed, rank, world_size)
        classes, class_of_item = np.unique(label_array, return_inverse=True)
        # Indices of each class, in dataset order; stable sort keeps that order within a class.
        order = np.argsort(class_of_item, kind="stable")
        counts = np.bincount(class_of_item, minlength=len(classes))
        classes_per_batch = batch_size // m_per_class
        if len(classes) < classes_per_batch:
            raise ToolkitError(
                f"the data has {len(classes)} classes but batch_size {batch_size} // "
                f"m_per_class {m_per_class} needs {classes_per_batch} distinct classes "
                f"per batch"
            )
        super().__init__(
            np.split(order, np.cumsum(counts)[:-1]),
            classes_per_batch,
            num_batches if num_batches is not None else math.ceil(len(label_array) / batch_size),
            seed,
        )
        self.m_per_class = m_per_class
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size

    def _local(self, batch: np.ndarray) -> np.ndarray:
        """This rank's contiguous slice of batch_size // world_size."""
        local_size = self.batch_size // self.world_size
        return batch[self.rank * local_size : (self.rank + 1) * local_size]

    def _draw(self, rng: np.random.Generator, pool: np.ndarray) -> np.ndarray:
        """M indices of one class: distinct when it has M or more, else all plus repeats."""
        if len(pool) >= self.m_per_class:
            return rng.choice(pool, self.m_per_class, replace=False)
        extra = rng.choice(pool, self.m_per_class - len(pool), replace=True)
        return np.concatenate([pool, extra])


def inverse_frequency_weights(labels: Sequence[int] | Tensor, num_classes: int) -> Tensor:
    """Per-class weights proportional to 1 / class count, with mean 1 over the samples.

    w_c = N / (C * n_c), where n_c is class c's count, N = sum n_c and C the number of
    classes present; then sum_c n_c w_c / N = 1, so weighting keeps the loss's scale.
    Classes absent from `labels` get weight 0. Per-sample weights for the losses are
    `weights[labels]`. Combining them with `ClassBalancedBatchSampler` corrects the imbalance
    twice; use one or the other.

    Args:
        labels: Class of every item, each in [0, num_classes).
        num_classes: Number of classes.

    Returns:
        float32 weights, shape num_classes.

    Raises:
        ToolkitError: For empty labels or a label outside [0, num_classes).
    """
    label_tensor = torch.as_tensor(labels, dtype=torch.int64).flatten()
    if label_tensor.numel() == 0:
        raise ToolkitError("inverse_frequency_weights needs at least one label, got none")
    low, high = int(label_tensor.min()), int(label_tensor.max())
    if low < 0 or high >= num_classes:
        bad = low if low < 0 else high
        raise ToolkitError(
            f"label {bad} is outside [0, {num_classes}) for num_classes {num_classes}"
        )
    counts = torch.bincount(label_tensor, minlength=num_classes).to(torch.float64)
    present = counts > 0
    weights = torch.zeros(num_classes, dtype=torch.float64)
    weights[present] = label_tensor.numel() / (int(present.sum()) * counts[present])
    return weights.to(torch.float32)


def _check_arguments(
    labels: np.ndarray,
    m_per_class: int,
    batch_size: int,
    num_batches: int | None,
    seed: int,
    rank: int,
    world_size: int,
) -> None:
    if labels.ndim != 1 or labels.size == 0:
        raise ToolkitError(f"labels must be a non-empty 1-D sequence, got shape {labels.shape}")
    if m_per_class < 1:
        raise ToolkitError(f"m_per_class must be >= 1, got {m_per_class}")
    if batch_size < 1 or batch_size % m_per_class:
        raise ToolkitError(
            f"batch_size {batch_size} must be a positive multiple of m_per_class {m_per_class}"
        )
    if world_size < 1:
        raise ToolkitError(f"world_size must be >= 1, got {world_size}")
    if batch_size % world_size:
        raise ToolkitError(
            f"batch_size {batch_size} must be divisible by world_size {world_size}, "
            f"since each rank gets an equal slice of every batch"
        )
    if not 0 <= rank < world_size:
        raise ToolkitError(f"rank {rank} must be in [0, {world_size}) for world_size {world_size}")
    if num_batches is not None and num_batches < 1:
        raise ToolkitError(f"num_batches must be >= 1 or None, got {num_batches}")
    if seed < 0:
        raise ToolkitError(f"seed must be >= 0, got {seed}")
