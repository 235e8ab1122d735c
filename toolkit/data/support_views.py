"""Support-set test-time augmentation: a support image is represented by its own embedding and those of
a few augmented views of it (``toolkit embed --tta`` applies the same to every image it embeds).

With one labelled image per class, the class prototype of a Prototypical Network (Snell et al.
2017, Eq. 1) is that one image's embedding, and whatever the crop or stroke happened to be is
baked into it. Averaging the embeddings of augmented copies of each support image (test-time
augmentation of the support set only, with no training on it) moves the prototype towards the
class mean the model was trained to separate; queries keep the single evaluation view.

The views are the fine-tuning augmentation (``finetune.augment``: the invariances the model was
trained for), drawn by ``toolkit.data.batch_augment`` from a per-image seed, a hash of the image's
pixels: an image's views depend on its pixels alone, not on its position in a support folder, the
other images or the batch around it.
The result is the unit-length mean ``(e_0 + e_1 + ... + e_V) / ||...||`` of the image's own
(evaluation view) embedding ``e_0`` and its ``V`` views' embeddings, all unit vectors.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
import torch

from toolkit.config import AugmentConfig
from toolkit.data.batch_augment import BatchViews
from toolkit.errors import ToolkitError

MAX_SUPPORT_VIEWS = 64  # more views cost time and stop changing the mean


def check_support_views(views: int, where: str = "--support-tta", what: str = "support image") -> int:
    """``views`` as an int in [0, MAX_SUPPORT_VIEWS], else a one-line error naming ``where``."""
    if isinstance(views, bool) or not isinstance(views, (int, np.integer)) or not 0 <= views <= MAX_SUPPORT_VIEWS:
        raise ToolkitError(f"{where} {views!r}: the number of augmented views per {what} must be an "
                           f"integer from 0 (off) to {MAX_SUPPORT_VIEWS}")
    return int(views)


def content_seeds(images: torch.Tensor, seed: int = 0) -> np.ndarray:
    """(N,) int64 seeds: a 63-bit BLAKE2b hash of each image's uint8 pixels (and ``seed``)."""
    pixels = images.cpu().numpy()
    salt = int(seed).to_bytes(8, "little", signed=True)
    return np.array([int.from_bytes(hashlib.blake2b(image.tobytes(), digest_size=8, salt=salt).digest(), "little") >> 1
                     for image in pixels], dtype=np.int64)


def support_view_embeddings(
    embed: Callable[[torch.Tensor], np.ndarray],
    images: torch.Tensor,
    own: np.ndarray,
    augment: AugmentConfig,
    size: int,
    channels: int,
    views: int,
    seeds: np.ndarray | None = None,
    batch_size: int = 256,
) -> np.ndarray:
    """Unit-length means of each image's own embedding and its ``views`` augmented views' embeddings.

    Args:
        embed: float32 images in [0, 255], (n, C, size, size) -> (n, D) unit embeddings (the caller
            normalises the pixels and runs the model).
        images: (N, C, S, S) uint8 images (S >= size: the crop is drawn on the whole image).
        own: (N, D) unit embeddings of the images' evaluation view (``views = 0`` returns them).
        augment: the views' distribution (``finetune.augment`` of the model).
        size, channels: the model's input side and channels.
        views: augmented views per image.
        seeds: (N,) per-image seeds; default ``content_seeds(images)``.
        batch_size: images per model call.

    Returns:
        (N, D) float32 unit vectors.
    """
    views = check_support_views(views)
    own = np.asarray(own, dtype=np.float32)
    if len(images) != len(own):
        raise ToolkitError(f"support views: {len(images)} images but {len(own)} embeddings")
    if views == 0 or len(own) == 0:
        return own
    maker = BatchViews(augment, size, channels)
    total = own.astype(np.float64)
    seeds = content_seeds(images) if seeds is None else np.asarray(seeds, dtype=np.int64)
    if seeds.shape != (len(images),):
        raise ToolkitError(f"support views: {seeds.shape} seeds for {len(images)} images")
    side = images.shape[-1]
    for start in range(0, len(images), batch_size):
        batch, batch_seeds = images[start:start + batch_size], seeds[start:start + batch_size]
        for view in range(views):
            with torch.no_grad():
                pixels = maker.apply(batch, maker.params(batch_seeds, view, side))
            total[start:start + len(batch)] += embed(pixels)
    norms = np.linalg.norm(total, axis=1, keepdims=True)
    return (total / np.maximum(norms, 1e-12)).astype(np.float32)
