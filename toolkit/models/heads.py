"""The MLP heads of SimSiam (Sec. 3 and Appendix A) and the embedding head of fine-tuning.

Batch-norm placement is a parameter because the paper's Table 4 ablates it:
``none`` (no BN), ``hidden`` (BN after hidden layers only) and ``all`` (hidden and output).
A linear layer followed by BN has no bias: BN's shift makes it redundant.
"""

from __future__ import annotations

from torch import nn

from toolkit.config import BN_PLACEMENTS
from toolkit.errors import ToolkitError


def _linear_bn(in_dim: int, out_dim: int, bn: bool, relu: bool, affine: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Linear(in_dim, out_dim, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm1d(out_dim, affine=affine))
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return layers


def _check_bn(bn: str) -> None:
    if bn not in BN_PLACEMENTS:
        raise ToolkitError(f"unknown batch-norm placement {bn!r}; valid: {', '.join(BN_PLACEMENTS)}")


def projector(in_dim: int, hidden_dim: int, out_dim: int, layers: int = 3, bn: str = "all") -> nn.Sequential:
    """Projection MLP: (fc, BN, ReLU) x (layers - 1), then fc and BN without affine (paper default).

    With ``layers=3`` this is the ImageNet projector; ``layers=2`` is the CIFAR one (Appendix D).
    Output: N x out_dim.
    """
    _check_bn(bn)
    if layers not in (2, 3):
        raise ToolkitError(f"model.proj_layers must be 2 or 3, got {layers}")
    modules: list[nn.Module] = []
    dim = in_dim
    for _ in range(layers - 1):
        modules += _linear_bn(dim, hidden_dim, bn=bn != "none", relu=True)
        dim = hidden_dim
    modules += _linear_bn(dim, out_dim, bn=bn == "all", relu=False, affine=False)
    return nn.Sequential(*modules)


def predictor(dim: int, hidden_dim: int, bn: str = "hidden") -> nn.Sequential:
    """Prediction MLP h: a bottleneck d -> d/4 -> d, BN and ReLU on the hidden layer only (Sec. 3)."""
    _check_bn(bn)
    modules = _linear_bn(dim, hidden_dim, bn=bn != "none", relu=True)
    modules += _linear_bn(hidden_dim, dim, bn=bn == "all", relu=False)
    return nn.Sequential(*modules)


def embedding_head(in_dim: int, out_dim: int) -> nn.Sequential:
    """The new head of metric fine-tuning: fc, BN, ReLU, fc; the encoder l2-normalises its output."""
    return nn.Sequential(*_linear_bn(in_dim, in_dim, bn=True, relu=True), nn.Linear(in_dim, out_dim))
