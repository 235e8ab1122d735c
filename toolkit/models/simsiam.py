"""SimSiam (Chen & He, 2021): one encoder f = projector(backbone), a predictor h, stop-gradient.

    z1, z2 = f(x1), f(x2)          # the two views share every weight (a Siamese network)
    p1, p2 = h(z1), h(z2)
    L = D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2   # Eq. (1)-(4), D = negative cosine similarity

The paper's ablations are constructor switches: no stop-gradient (Sec. 4.1), predictor removed
or fixed at its random initialisation (Sec. 4.2, Table 1) and batch-norm placement (Table 4);
the asymmetric loss (Sec. 4.6) lives in ``toolkit.losses.simsiam``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from toolkit.config import ModelConfig
from toolkit.errors import ToolkitError
from toolkit.models.backbones import build_backbone
from toolkit.models.heads import predictor as build_predictor
from toolkit.models.heads import projector as build_projector


class SimSiamOutput(NamedTuple):
    """Predictions p and targets z of both views, each N x d; z already carries the stop-gradient."""

    p1: torch.Tensor
    p2: torch.Tensor
    z1: torch.Tensor
    z2: torch.Tensor


class SimSiam(nn.Module):
    """Backbone + projection MLP + prediction MLP, with the paper's ablation switches."""

    def __init__(self, cfg: ModelConfig, in_channels: int = 3) -> None:
        super().__init__()
        if cfg.predictor not in ("learned", "fixed_random", "none"):
            raise ToolkitError(f"model.predictor is {cfg.predictor!r}; valid: learned, fixed_random, none")
        self.backbone, self.feat_dim = build_backbone(
            cfg.backbone, in_channels=in_channels, cifar_stem=cfg.cifar_stem, width=cfg.width,
            zero_init_residual=cfg.zero_init_residual)
        self.dim = cfg.dim
        self.projector = build_projector(self.feat_dim, cfg.proj_hidden or cfg.dim, cfg.dim, cfg.proj_layers, cfg.proj_bn)
        self.predictor: nn.Module = (nn.Identity() if cfg.predictor == "none"
                                     else build_predictor(cfg.dim, cfg.pred_hidden or cfg.dim // 4, cfg.pred_bn))
        if cfg.predictor == "fixed_random":
            self.predictor.requires_grad_(False)  # h stays at its random initialisation (Table 1b)
        self.stop_gradient = cfg.stop_gradient

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """f(x) = projector(backbone(x)): N x C x H x W -> N x d."""
        return self.projector(self.backbone(x))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> SimSiamOutput:
        # Two passes, as in the official code: batch norm normalises each view's batch on its own.
        z1, z2 = self.encode(x1), self.encode(x2)  # N x d each
        p1, p2 = self.predictor(z1), self.predictor(z2)  # N x d each
        if self.stop_gradient:
            z1, z2 = z1.detach(), z2.detach()  # sg(.): the target branch gets no gradient (Sec. 3)
        return SimSiamOutput(p1, p2, z1, z2)
