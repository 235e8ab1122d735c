"""Embed a whole image store in batches: the feature extraction behind kNN, evaluation and parity checks."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from toolkit.data.augment import eval_transform
from toolkit.data.store import ImageStore
from toolkit.data.preprocess import Normalizer


@torch.no_grad()
def embed_store(fn: Callable[[torch.Tensor], torch.Tensor], store: ImageStore, normalizer: Normalizer,
                image_size: int, batch_size: int = 256,
                autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> np.ndarray:
    """l2-normalised ``fn`` outputs of every image of ``store``, as float32 N x D (the evaluation view)."""
    crop = eval_transform(image_size) if store.images.shape[-1] != image_size else None
    chunks = []
    for start in range(0, len(store), batch_size):
        images = store.images[start:start + batch_size]
        if crop is not None:
            images = crop(images)
        with autocast():
            out = fn(normalizer(images))
        chunks.append(F.normalize(out.float(), dim=1).cpu())
    return torch.cat(chunks).numpy()
