"""Deterministic, resumable data loading.

Every epoch has a *plan*: the list of batches, each a list of ``(index, seed)`` keys, made from
the run's seed and the epoch number alone. A dataset seeds the augmentation of each sample from
its key, so the images a step sees depend neither on the number of worker processes nor on
whether the run was interrupted and resumed: a resumed run replays exactly the same batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from toolkit.data.store import ImageStore
from toolkit.data.workers import worker_init_fn

Key = tuple[int, int]
Plan = list[list[Key]]


def shuffled_plan(n: int, global_batch: int, seed: int, epoch: int, rank: int = 0, world_size: int = 1) -> Plan:
    """Shuffle ``n`` indices for ``epoch`` and cut full global batches; this rank's slice of each.

    The last incomplete batch is dropped (as in the official SimSiam loader), so every step has
    the same batch statistics.
    """
    rng = np.random.default_rng([seed, epoch, 0x5EED])
    order = rng.permutation(n)
    seeds = rng.integers(0, 2**62, size=n)
    per_rank = global_batch // world_size
    batches: Plan = []
    for start in range(0, n - global_batch + 1, global_batch):
        lo = start + rank * per_rank
        batches.append([(int(order[i]), int(seeds[i])) for i in range(lo, lo + per_rank)])
    return batches


def keyed_plan(batches: Sequence[Sequence[int]], seed: int, epoch: int) -> Plan:
    """Attach a distinct augmentation seed to every position of index batches (e.g. from a class-balanced sampler)."""
    rng = np.random.default_rng([seed, epoch, 0xA06])
    return [[(int(i), int(s)) for i, s in zip(batch, rng.integers(0, 2**62, size=len(batch)))] for batch in batches]


class PlanSampler(Sampler[list[Key]]):
    """Batch sampler that replays a plan, starting at batch ``start`` (for mid-epoch resume)."""

    def __init__(self) -> None:
        self.plan: Plan = []
        self.start = 0

    def set_plan(self, plan: Plan, start: int = 0) -> None:
        self.plan, self.start = plan, start

    def __iter__(self) -> Iterator[list[Key]]:
        return iter(self.plan[self.start:])

    def __len__(self) -> int:
        return max(0, len(self.plan) - self.start)


def _seed_sample(seed: int) -> None:
    # torchvision's v2 transforms draw from torch's default CPU generator.
    torch.default_generator.manual_seed(seed)


class TwoViewDataset(Dataset):
    """Two independent random views of one image, plus its label (-1 when unlabeled)."""

    def __init__(self, store: ImageStore, transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.images, self.transform = store.images, transform
        self.labels = torch.as_tensor(store.labels if store.labels is not None else np.full(len(store), -1))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        index, seed = key
        _seed_sample(seed)
        image = self.images[index]
        return self.transform(image), self.transform(image), self.labels[index]


class OneViewDataset(TwoViewDataset):
    """One random view of an image and its label (metric fine-tuning)."""

    def __getitem__(self, key: Key) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[override]
        index, seed = key
        _seed_sample(seed)
        return self.transform(self.images[index]), self.labels[index]


def keep_batch(batch: Any) -> Any:
    """The collate function of a dataset that fetches whole batches: the batch as fetched."""
    return batch


class KeyedImages(Dataset):
    """A batch's cached uint8 images, augmentation seeds and labels, fetched at once (``data.batch_augment``).

    ``__getitems__`` serves the DataLoader a whole batch with one index operation; the views are
    made on the training device by ``toolkit.data.batch_augment.BatchViews`` from the seeds.
    """

    collate = staticmethod(keep_batch)

    def __init__(self, store: ImageStore) -> None:
        self.images = store.images
        self.labels = torch.as_tensor(store.labels if store.labels is not None else np.full(len(store), -1))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitems__(self, keys: Sequence[Key]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, C, S, S) uint8 images, (B,) int64 seeds and (B,) labels of ``keys``."""
        index = torch.tensor([k[0] for k in keys], dtype=torch.int64)
        seeds = torch.tensor([k[1] for k in keys], dtype=torch.int64)
        if isinstance(self.images, torch.Tensor):
            images = self.images[index]
        else:  # LazyImages: decoded per image
            images = torch.stack([self.images[int(i)] for i in index])
        return images, seeds, self.labels[index]


def make_loader(dataset: Dataset, sampler: PlanSampler, workers: int, pin_memory: bool) -> DataLoader:
    """A DataLoader over ``sampler``'s plan; workers persist across epochs.

    A dataset that fetches whole batches names its collate function in ``collate``.
    """
    return DataLoader(dataset, batch_sampler=sampler, num_workers=workers, pin_memory=pin_memory,
                      collate_fn=getattr(dataset, "collate", None),
                      persistent_workers=workers > 0, worker_init_fn=worker_init_fn(single_thread=True) if workers > 0 else None,
                      prefetch_factor=4 if workers > 0 else None)
