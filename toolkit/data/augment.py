"""Image transforms on uint8 (C, H, W) tensors: SimSiam's two views and the evaluation view.

The views follow SimSiam's Appendix A (the MoCo v2 recipe): RandomResizedCrop with scale
(0.2, 1), colour jitter (0.4, 0.4, 0.4, 0.1) with p=0.8, grayscale with p=0.2, Gaussian blur
(sigma 0.1-2, p=0.5 on ImageNet; off for CIFAR, Appendix D) and a horizontal flip. Transforms
stay in uint8; normalisation happens on whole batches on the training device
(``toolkit.data.preprocess``), which is cheaper than per image.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from toolkit.config import AugmentConfig


def view_transform(cfg: AugmentConfig, size: int, channels: int) -> v2.Compose:
    """One random view of an image (apply twice for SimSiam's two views)."""
    ops: list[torch.nn.Module] = [
        v2.RandomResizedCrop(size, scale=(cfg.crop_min_scale, cfg.crop_max_scale), antialias=True)
    ]
    if cfg.jitter_p > 0:
        if channels == 3:
            jitter = v2.ColorJitter(cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue)
        else:  # saturation and hue are undefined on one channel
            jitter = v2.ColorJitter(cfg.brightness, cfg.contrast)
        ops.append(v2.RandomApply([jitter], p=cfg.jitter_p))
    if cfg.grayscale_p > 0 and channels == 3:
        ops.append(v2.RandomGrayscale(p=cfg.grayscale_p))
    if cfg.blur_p > 0:
        kernel = max(3, int(0.1 * size) // 2 * 2 + 1)  # about 10% of the side, odd (as in BYOL/SimCLR)
        ops.append(v2.RandomApply([v2.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=cfg.blur_p))
    if cfg.hflip > 0:
        ops.append(v2.RandomHorizontalFlip(p=cfg.hflip))
    return v2.Compose(ops)


def eval_transform(size: int) -> v2.Compose:
    """The deterministic view: a centre crop of ``size`` from the cached square image."""
    return v2.Compose([v2.CenterCrop(size)])
