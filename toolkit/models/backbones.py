"""Backbones: torchvision ResNets (optionally with the CIFAR stem) and a small ConvNet.

Each builder returns the network without its classifier and the width of its feature vector.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision import models

from toolkit.config import BACKBONES
from toolkit.errors import ToolkitError

RESNETS = {"resnet18": models.resnet18, "resnet34": models.resnet34, "resnet50": models.resnet50}


class ConvNet(nn.Module):
    """Four 3x3 conv blocks (conv, BN, ReLU, 2x2 max-pool) and global average pooling.

    The "Conv-4" of few-shot learning (Vinyals et al. 2016; Snell et al. 2017), fast on a CPU.
    Global pooling instead of flattening makes it accept any input of 16 px or more.
    """

    def __init__(self, in_channels: int = 3, width: int = 64) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels = in_channels
        for _ in range(4):
            blocks += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            channels = width
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.pool(self.features(x)), 1)  # N x width


def build_backbone(name: str, *, in_channels: int = 3, cifar_stem: bool = False, width: int = 64,
                   zero_init_residual: bool = True) -> tuple[nn.Module, int]:
    """Build a backbone by name.

    Args:
        name: one of ``convnet``, ``resnet18``, ``resnet34``, ``resnet50``.
        in_channels: 3 for RGB, 1 for grayscale input.
        cifar_stem: ResNets only: 3x3 stride-1 conv1 and no max-pool (SimSiam Appendix D).
        width: ConvNet channels.
        zero_init_residual: zero the last BN of each residual block, as the official code does.

    Returns:
        The module (input N x C x H x W, output N x F) and F.
    """
    if name == "convnet":
        return ConvNet(in_channels, width), width
    if name not in RESNETS:
        raise ToolkitError(f"unknown backbone {name!r}; valid: {', '.join(BACKBONES)}")
    net = RESNETS[name](weights=None, zero_init_residual=zero_init_residual)
    feat_dim = net.fc.in_features
    net.fc = nn.Identity()
    if cifar_stem:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        net.maxpool = nn.Identity()
    elif in_channels != 3:
        net.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return net, feat_dim
