"""Batch normalisation of uint8 images on the device: the one place inputs get their float form.

Every consumer (training, feature extraction, export parity checks, the PyTorch backend of
``toolkit embed``) goes through ``Normalizer`` so that all of them see identical inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def resize_size(image_size: int, load_size: int = 0) -> int:
    """The shorter side images are resized to before the centre crop of ``image_size``.

    ``data.load_size`` (0 = ``image_size``) never goes below the network input: the one rule that
    training (``toolkit.data.store.load_data``), checkpoints and exported models share.
    """
    return max(int(load_size or image_size), int(image_size))


class Normalizer:
    """uint8 (N, C, H, W) -> float32 ``(x / 255 - mean) / std`` on ``device``, optionally channels_last."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device, channels_last: bool = False) -> None:
        self.mean = torch.tensor(list(mean), dtype=torch.float32, device=device).view(1, -1, 1, 1) * 255.0
        self.inv_std = 1.0 / (torch.tensor(list(std), dtype=torch.float32, device=device).view(1, -1, 1, 1) * 255.0)
        self.device = device
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.device, non_blocking=True).float()
        x = (x - self.mean) * self.inv_std
        return x.contiguous(memory_format=self.memory_format)
