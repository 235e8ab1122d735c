"""The supervised long-tail baseline: cross-entropy with a class-balanced sampler, on a CPU-time budget.

A backbone (the same builder as the pipeline's) plus a linear classifier, trained with
cross-entropy on batches from ``ClassBalancedBatchSampler`` (every batch has ``m_per_class``
images of ``batch_size / m_per_class`` classes drawn uniformly, so tail classes are oversampled;
the re-sampling baseline of long-tail papers, e.g. Cao et al. 2019's "CB" rows), with the
pipeline's fine-tuning augmentation, SGD with momentum and a cosine lr over the time budget.
Training stops when ``seconds`` of process CPU time are spent, so it gets the same CPU time as
the pipeline it is compared with. Predictions are the classifier's argmax.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from toolkit.config import Recipe
from toolkit.data.augment import view_transform
from toolkit.data.preprocess import Normalizer
from toolkit.data.sampling import ClassBalancedBatchSampler
from toolkit.data.store import ImageStore
from toolkit.models.backbones import build_backbone


@dataclass(frozen=True)
class SupervisedSettings:
    """Cross-entropy training of the baseline."""

    seconds: float  # process CPU-time budget (time.process_time), all threads together
    batch_size: int = 128
    m_per_class: int = 16
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0


def train_supervised(recipe: Recipe, store: ImageStore, normalizer: Normalizer,
                     settings: SupervisedSettings) -> tuple[nn.Module, dict[str, float]]:
    """Train backbone + linear classifier until the CPU budget is spent; returns the eval-mode net and stats."""
    assert store.labels is not None
    torch.manual_seed(settings.seed)
    num_classes = len(store.class_names)
    backbone, width = build_backbone(recipe.model.backbone, in_channels=recipe.data.channels,
                                     cifar_stem=recipe.model.cifar_stem, width=recipe.model.width)
    net = nn.Sequential(backbone, nn.Linear(width, num_classes)).to(normalizer.device)
    optimizer = torch.optim.SGD(net.parameters(), lr=settings.lr, momentum=settings.momentum,
                                weight_decay=settings.weight_decay)
    transform = view_transform(recipe.finetune.augment, recipe.data.image_size, recipe.data.channels)
    sampler = ClassBalancedBatchSampler(store.labels, settings.m_per_class, settings.batch_size, seed=settings.seed)
    labels = torch.from_numpy(store.labels)
    net.train()
    start, steps, epoch, done = time.process_time(), 0, 0, False
    while not done:
        sampler.set_epoch(epoch)
        for batch in sampler:
            spent = time.process_time() - start
            if spent >= settings.seconds:
                done = True
                break
            for group in optimizer.param_groups:  # cosine over the budget, by CPU time spent
                group["lr"] = settings.lr * 0.5 * (1 + math.cos(math.pi * spent / settings.seconds))
            x = torch.stack([transform(store.images[i]) for i in batch])
            loss = F.cross_entropy(net(normalizer(x)), labels[batch].to(normalizer.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
        epoch += 1
    return net.eval(), {"cpu_seconds": time.process_time() - start, "steps": steps, "epochs_started": epoch}


@torch.no_grad()
def predict(net: nn.Module, store: ImageStore, normalizer: Normalizer, size: int, batch_size: int = 512) -> np.ndarray:
    """Argmax class of every image (centre crop of ``size``), int64."""
    from toolkit.data.augment import eval_transform

    crop = eval_transform(size)
    out = []
    for i in range(0, len(store), batch_size):
        x = crop(store.images[i:i + batch_size])
        out.append(net(normalizer(x)).argmax(dim=1).cpu())
    return torch.cat(out).numpy().astype(np.int64)
