"""A network's input format (``Preprocessing``) and the batch normalisation of uint8 images on the device.

``Preprocessing`` is the one description of how images become a network's input. Every consumer
(training, feature extraction, export parity checks, the PyTorch backend of ``toolkit embed``) goes
through ``Normalizer`` so that all of them see identical inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from toolkit.config import DataConfig


def resize_size(image_size: int, load_size: int = 0) -> int:
    """The shorter side images are resized to before the centre crop of ``image_size``.

    ``data.load_size`` (0 = ``image_size``) never goes below the network input: the one rule that
    training (``toolkit.data.store.load_data``), checkpoints and exported models share.
    """
    return max(int(load_size or image_size), int(image_size))


@dataclass(frozen=True)
class Preprocessing:
    """How images become the network's input: shorter side to ``resize_size``, centre crop of
    ``image_size``, ``(x / 255 - mean) / std`` per channel (NCHW float32).

    The one description of it: a checkpoint stores it, an exported model's ``ModelInfo``
    (``exporters.metadata``) composes it and an index's fingerprint (``scoring.index.fingerprint``) hashes it.
    """

    image_size: int
    resize_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def input_chw(self) -> tuple[int, int, int]:
        """The network input's (channels, height, width)."""
        return self.channels, self.image_size, self.image_size

    def to_dict(self) -> dict[str, Any]:
        """``{image_size, resize_size, channels, mean, std}``, mean and std as lists (its JSON form everywhere)."""
        return {"image_size": self.image_size, "resize_size": self.resize_size, "channels": self.channels,
                "mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def of(cls, data: DataConfig, mean: Sequence[float], std: Sequence[float]) -> Preprocessing:
        """The preprocessing of a run on ``data`` (``[data]`` of its recipe), with its resolved ``mean`` / ``std``."""
        return cls(int(data.image_size), resize_size(data.image_size, data.load_size), int(data.channels),
                   tuple(float(m) for m in mean), tuple(float(s) for s in std))


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
