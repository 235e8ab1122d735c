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
from toolkit.engine.checkpoint import Checkpoint


@torch.no_grad()
def embed_store(fn: Callable[[torch.Tensor], torch.Tensor], store: ImageStore, normalizer: Normalizer,
                image_size: int, batch_size: int = 256,
                autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
                l2_normalise: bool = True) -> np.ndarray:
    """``fn`` outputs of every image of ``store`` (l2-normalised unless told not), float32 N x D (the evaluation view)."""
    crop = eval_transform(image_size) if store.images.shape[-1] != image_size else None
    chunks = []
    for start in range(0, len(store), batch_size):
        images = store.images[start:start + batch_size]
        if crop is not None:
            images = crop(images)
        with autocast():
            out = fn(normalizer(images))
        out = out.float()
        chunks.append((F.normalize(out, dim=1) if l2_normalise else out).cpu())
    return torch.cat(chunks).numpy()


def embed_checkpoint(ckpt: Checkpoint, device: torch.device, *stores: ImageStore) -> list[np.ndarray]:
    """fp32 embeddings (N x D, unit length) of every store by a checkpoint's encoder, as the exported fp32 model computes them."""
    encoder, normalizer, image_size = _deployed(ckpt, device)
    with torch.inference_mode():
        return [embed_store(encoder, store, normalizer, image_size) for store in stores]


def _deployed(ckpt: Checkpoint, device: torch.device) -> tuple[torch.nn.Module, Normalizer, int]:
    """A checkpoint's deployed encoder on ``device``, its input normaliser and input side."""
    pre = ckpt.preprocessing
    assert pre is not None, "a trained checkpoint always records its preprocessing"
    return ckpt.encoder().to(device), Normalizer(pre.mean, pre.std, device), pre.image_size


def checkpoint_embedder(ckpt: Checkpoint, device: torch.device) -> Callable[[torch.Tensor], np.ndarray]:
    """float pixels in [0, 255] (N, C, S, S) -> fp32 unit embeddings (N x D) by a checkpoint's encoder on ``device``."""
    encoder, normalizer, _ = _deployed(ckpt, device)

    def embed(pixels: torch.Tensor) -> np.ndarray:
        with torch.inference_mode():
            return F.normalize(encoder(normalizer(pixels)).float(), dim=1).cpu().numpy()

    return embed
