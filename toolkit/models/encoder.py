"""The deployable encoder: backbone (+ the fine-tuning head) -> l2-normalised embedding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Encoder(nn.Module):
    """x (N x C x H x W, normalised float) -> embeddings (N x D), unit length, float32.

    After SimSiam pretraining the embedding is the backbone feature (the representation the
    paper evaluates); after metric fine-tuning it is the output of the new embedding head.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head if head is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.head(self.backbone(x))  # N x D
        return F.normalize(features.float(), dim=1)  # fp32 so bf16/fp16 runs keep exact unit norms
