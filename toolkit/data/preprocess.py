"""Batch normalisation of uint8 images on the device: the one place inputs get their float form.

Every consumer (training, feature extraction, export parity checks, the PyTorch backend of
``toolkit embed``) goes through ``Normalizer`` so that all of them see identical inputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


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
