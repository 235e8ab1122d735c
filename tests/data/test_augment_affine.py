"""Stroke augmentation: off = today's views exactly; on = torchvision's functional affine on a known image."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from toolkit.config import AugmentConfig, load_recipe
from toolkit.data.augment import affine_transform, view_transform
from toolkit.errors import ToolkitError


def _image(size: int = 29) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (1, size, size), dtype=torch.uint8, generator=g)


def _today(cfg: AugmentConfig, size: int) -> v2.Compose:
    """The view transform as it was before the affine option (1 channel, jitter only)."""
    return v2.Compose([v2.RandomResizedCrop(size, scale=(cfg.crop_min_scale, cfg.crop_max_scale), antialias=True),
                       v2.RandomApply([v2.ColorJitter(cfg.brightness, cfg.contrast)], p=cfg.jitter_p),
                       v2.RandomHorizontalFlip(p=cfg.hflip)])


def test_defaults_are_off_and_give_todays_views() -> None:
    recipe = load_recipe(None)
    for cfg in (recipe.augment, recipe.finetune.augment):
        assert affine_transform(cfg) is None
    cfg = dataclasses.replace(recipe.augment, grayscale_p=0.0, blur_p=0.0)
    image = _image(40)
    for seed in range(5):
        torch.manual_seed(seed)
        ours = view_transform(cfg, 28, 1)(image)
        torch.manual_seed(seed)
        assert torch.equal(ours, _today(cfg, 28)(image))


def test_fixed_scale_matches_functional_affine_and_geometry() -> None:
    cfg = AugmentConfig(affine_scale_min=2.0, affine_scale_max=2.0)
    image = torch.zeros(1, 29, 29, dtype=torch.uint8)
    image[0, 14 + 3, 14 - 2] = 255  # 3 rows below and 2 columns left of the centre pixel (14, 14)
    out = affine_transform(cfg)(image)
    expected = F.affine(image, angle=0.0, translate=[0, 0], scale=2.0, shear=[0.0, 0.0],
                        interpolation=v2.InterpolationMode.BILINEAR, fill=0)
    assert torch.equal(out, expected)
    # independent of torchvision: scaling by 2 about the centre sends offset (3, -2) to (6, -4)
    row, col = np.unravel_index(int(out[0].argmax()), (29, 29))
    assert (row, col) == (14 + 6, 14 - 4)


def test_random_rotation_is_a_functional_rotation_within_the_range() -> None:
    cfg = AugmentConfig(affine_rotation=10.0, affine_fill=255)
    image = _image()
    for seed in range(3):
        torch.manual_seed(seed)
        out = affine_transform(cfg)(image)
        angles = np.arange(-10.0, 10.0001, 0.02)
        diffs = [(F.affine(image, angle=float(a), translate=[0, 0], scale=1.0, shear=[0.0, 0.0],
                           interpolation=v2.InterpolationMode.BILINEAR, fill=255).int() - out.int()).abs().max().item()
                 for a in angles]
        assert min(diffs) <= 1  # some angle in [-10, 10] reproduces it (up to rounding on the grid)
        assert not torch.equal(out, image)
    # the area a shrunk image no longer covers takes the fill value
    shrunk = affine_transform(AugmentConfig(affine_scale_min=0.5, affine_scale_max=0.5, affine_fill=255))(
        torch.zeros(1, 29, 29, dtype=torch.uint8))
    assert shrunk[0, 0, 0] == 255 and shrunk[0, 14, 14] == 0


def test_affine_comes_first_in_the_view() -> None:
    ops = view_transform(AugmentConfig(affine_shear=5.0), 28, 1).transforms
    assert isinstance(ops[0], v2.RandomAffine) and isinstance(ops[1], v2.RandomResizedCrop)


@pytest.mark.parametrize("changes", [{"affine_scale_min": 1.2, "affine_scale_max": 1.1}, {"affine_translate": 2.0},
                                     {"affine_rotation": -3.0}])
def test_bad_ranges_are_one_line_errors(changes: dict) -> None:
    with pytest.raises(ToolkitError, match="augment.affine"):
        affine_transform(AugmentConfig(**changes))
