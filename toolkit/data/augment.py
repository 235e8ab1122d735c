"""Image transforms on uint8 (C, H, W) tensors: SimSiam's two views and the evaluation view.

The views follow SimSiam's Appendix A (the MoCo v2 recipe): RandomResizedCrop with scale
(0.2, 1), colour jitter (0.4, 0.4, 0.4, 0.1) with p=0.8, grayscale with p=0.2, Gaussian blur
(sigma 0.1-2, p=0.5 on ImageNet; off for CIFAR, Appendix D) and a horizontal flip. Transforms
stay in uint8; normalisation happens on whole batches on the training device
(``toolkit.data.preprocess``), which is cheaper than per image.

For strokes and characters, an optional small random affine distortion (rotation, shear, scale,
translation: Koch et al. 2015, "Siamese Neural Networks for One-shot Image Recognition", Sec.
4.3) comes first, on the decoded image; it is off unless a recipe sets one of ``affine_*``.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from toolkit.config import AugmentConfig
from toolkit.errors import ToolkitError


def view_transform(cfg: AugmentConfig, size: int, channels: int) -> v2.Compose:
    """One random view of an image (apply twice for SimSiam's two views)."""
    ops: list[torch.nn.Module] = []
    affine = affine_transform(cfg)
    if affine is not None:
        ops.append(affine)
    ops.append(v2.RandomResizedCrop(size, scale=(cfg.crop_min_scale, cfg.crop_max_scale), antialias=True))
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


def affine_transform(cfg: AugmentConfig) -> v2.RandomAffine | None:
    """The random affine distortion of ``cfg.affine_*`` (bilinear), or None when every setting is off."""
    if not (0 < cfg.affine_scale_min <= cfg.affine_scale_max):
        raise ToolkitError(f"augment.affine_scale_min={cfg.affine_scale_min} and affine_scale_max={cfg.affine_scale_max}: "
                           "need 0 < min <= max")
    if not 0 <= cfg.affine_translate <= 1 or cfg.affine_rotation < 0 or cfg.affine_shear < 0:
        raise ToolkitError("augment.affine_rotation and affine_shear must be >= 0 degrees and affine_translate in [0, 1]; "
                           f"got {cfg.affine_rotation}, {cfg.affine_shear}, {cfg.affine_translate}")
    scale = (cfg.affine_scale_min, cfg.affine_scale_max)
    if cfg.affine_rotation == 0 and cfg.affine_shear == 0 and cfg.affine_translate == 0 and scale == (1.0, 1.0):
        return None
    return v2.RandomAffine(degrees=cfg.affine_rotation,
                           translate=(cfg.affine_translate, cfg.affine_translate) if cfg.affine_translate else None,
                           scale=scale, shear=cfg.affine_shear or None,
                           interpolation=v2.InterpolationMode.BILINEAR, fill=cfg.affine_fill)


def eval_transform(size: int) -> v2.Compose:
    """The deterministic view: a centre crop of ``size`` from the cached square image."""
    return v2.Compose([v2.CenterCrop(size)])
