"""What a training command gives the loop: an ``Objective`` and the one ``LoopSettings`` object it reads.

The objective (SimSiam in ``toolkit.pretrain``, a metric loss in ``toolkit.finetune``) owns its
batch size, its optimisation settings and its end-of-epoch checks; the loop never reads the
recipe's training keys itself, and names the objective's own keys in its messages.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from toolkit.config import Recipe
from toolkit.data.loaders import Plan
from toolkit.data.preprocess import Normalizer
from toolkit.errors import ToolkitError


@dataclass(frozen=True)
class LoopSettings:
    """Everything the loop reads, with the names of the recipe keys the values came from.

    ``epochs``, ``batch_size`` and the optimiser's values differ between objectives (``[train]``
    and ``[optim]`` for SimSiam, ``[finetune]`` for fine-tuning); the rest is ``[train]``.
    """

    epochs: int
    batch_size: int
    base_lr: float
    momentum: float
    weight_decay: float
    warmup_epochs: float
    optimizer: str = "sgd"  # sgd (with momentum) | adam (momentum unused)
    seed: int = 0
    precision: str = "auto"
    channels_last: bool = False
    compile: bool = False
    workers: int = 0
    init_batches: int = 4
    knn_every: int = 1
    knn_k: int = 20
    knn_t: float = 0.07
    epochs_key: str = "train.epochs"
    batch_size_key: str = "train.batch_size"
    lr_key: str = "optim.base_lr"

    @classmethod
    def of(cls, recipe: Recipe, *, epochs: int, batch_size: int, base_lr: float, momentum: float,
           weight_decay: float, warmup_epochs: float, section: str, optimizer: str = "sgd") -> LoopSettings:
        """The objective's own values plus the shared ``[train]`` ones; ``section`` names its keys."""
        t = recipe.train
        keys = ({"epochs_key": "train.epochs", "batch_size_key": "train.batch_size", "lr_key": "optim.base_lr"}
                if section == "train" else
                {"epochs_key": f"{section}.epochs", "batch_size_key": f"{section}.batch_size", "lr_key": f"{section}.base_lr"})
        return cls(epochs=epochs, batch_size=batch_size, base_lr=base_lr, momentum=momentum, weight_decay=weight_decay,
                   warmup_epochs=warmup_epochs, optimizer=optimizer, seed=t.seed, precision=t.precision, channels_last=t.channels_last,
                   compile=t.compile, workers=t.workers, init_batches=t.init_batches, knn_every=t.knn_every,
                   knn_k=t.knn_k, knn_t=t.knn_t, **keys)

    @property
    def scaled_lr(self) -> float:
        """The linear scaling rule lr = base_lr x batch / 256 (Goyal et al. 2017; SimSiam Sec. 3)."""
        return self.base_lr * self.batch_size / 256


def check_batch_size(settings: LoopSettings, world_size: int, images: int | None = None) -> None:
    """One-line errors for a batch size the processes or the data cannot serve (the one such check).

    ``images`` None skips the comparison with the data (a sampler that oversamples can fill any batch).
    """
    key, size = settings.batch_size_key, settings.batch_size
    if size % world_size:
        raise ToolkitError(f"{key}={size} must be divisible by the {world_size} processes")
    if images is not None and size > images:
        raise ToolkitError(f"{key}={size} is larger than the {images} training images; lower {key}")


@dataclass
class ParamGroup:
    """Parameters sharing an lr rule: scaled schedule, fixed initial lr, or frozen for some epochs."""

    name: str
    params: list[nn.Parameter]
    lr_scale: float = 1.0
    fixed_lr: bool = False
    frozen_epochs: int = 0
    weight_decay: float | None = None  # None: the objective's weight_decay; 0 for e.g. a learned temperature


@dataclass
class StepOutput:
    """A step's loss (a scalar tensor with grad) and scalar statistics averaged over the epoch."""

    loss: torch.Tensor
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


class Objective(ABC):
    """What a training command contributes to the loop."""

    kind: str  # "pretrain" | "finetune"
    model: nn.Module
    embedding_dim: int
    settings: LoopSettings

    @abstractmethod
    def dataset(self) -> Dataset: ...

    @abstractmethod
    def plan(self, epoch: int) -> Plan:
        """This rank's batches of ``epoch`` (epoch 0 = the batches measured at initialisation)."""

    @abstractmethod
    def step(self, model: nn.Module, batch: Any, normalizer: Normalizer) -> StepOutput: ...

    @abstractmethod
    def param_groups(self) -> list[ParamGroup]: ...

    @abstractmethod
    def monitor_features(self, x: torch.Tensor) -> torch.Tensor:
        """Features the kNN monitor classifies (N x F), computed by the unwrapped model."""

    def trained_beside_model(self) -> nn.Module | None:
        """A module trained beside ``model`` (e.g. the cosine proto loss with its learned scale), or None.

        The loop saves its state in the checkpoint, restores it on resume and, under DDP (which only
        syncs ``model``), averages its gradients over the ranks.
        """
        return None

    def epoch_extras(self) -> dict[str, Any]:
        """Constant fields added to every metrics record (e.g. z_std_ref)."""
        return {}

    def end_of_epoch(self, record: dict[str, Any]) -> None:
        """Checks after each epoch's record (e.g. SimSiam's collapse warning); rank 0 only."""


@dataclass
class RunResult:
    """What a finished run leaves: its folder, its metrics records (rank 0) and the trained module."""

    run_dir: Path
    records: list[dict[str, Any]]
    model: nn.Module
