"""Whole-batch views (``data.batch_augment``) against torchvision's per-image transforms and functional kernels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from toolkit.config import AugmentConfig, load_recipe
from toolkit.data.augment import view_transform
from toolkit.data import batch_colour
from toolkit.data.batch_augment import ANGLE, SCALE, SHEAR, TX, TY, BatchViews, crop_boxes, uniforms
from toolkit.data.loaders import KeyedImages, PlanSampler, make_loader, shuffled_plan
from toolkit.data.store import ImageStore

OFF = dict(hflip=0.0, jitter_p=0.0, grayscale_p=0.0, blur_p=0.0)  # geometry only
BILINEAR = v2.InterpolationMode.BILINEAR


def _images(n: int, channels: int, side: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, channels, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_uniforms_are_uniform_independent_and_a_function_of_the_seed_alone() -> None:
    seeds = np.arange(20000) * 7 + 3
    u = uniforms(seeds, view=0)
    assert u.shape == (20000, 40) and u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.005 and abs(u.var() - 1 / 12) < 0.002
    corr = np.corrcoef(np.concatenate([u[:, :5], uniforms(seeds, view=1)[:, :5]], axis=1).T)
    assert np.abs(corr - np.eye(10)).max() < 0.05  # draws and views uncorrelated
    assert np.array_equal(uniforms(seeds[::-1], 0), u[::-1])  # no dependence on the batch around a seed


def test_identity_parameters_give_the_identity() -> None:
    images = _images(8, 3, 24)
    views = BatchViews(AugmentConfig(crop_min_scale=1.0, crop_max_scale=1.0, **OFF), 24, 3)
    for view in views.two_views(images, np.arange(8)):
        assert torch.equal(view.round().to(torch.uint8), images)
        assert (view - images.float()).abs().max() < 1e-3


def test_crop_boxes_follow_torchvision_random_resized_crop() -> None:
    """The boxes' distribution against torchvision's own sampler, and every box within the rules."""
    side, n = 24, 6000
    boxes = crop_boxes(uniforms(np.arange(n), 0), side, (0.2, 1.0))
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= side).all() and (left + w <= side).all()
    sampler = v2.RandomResizedCrop(16, scale=(0.2, 1.0))
    torch.manual_seed(0)
    ref = [sampler.make_params([torch.zeros(1, side, side)]) for _ in range(n)]
    ref_h, ref_w = np.array([r["height"] for r in ref]), np.array([r["width"] for r in ref])
    ref_top = np.array([r["top"] for r in ref])
    for ours, theirs in ((h * w / side**2, ref_h * ref_w / side**2), (np.log(w / h), np.log(ref_w / ref_h)),
                         (top / (side - h + 1), ref_top / (side - ref_h + 1))):
        assert abs(ours.mean() - theirs.mean()) < 4 * np.sqrt(ours.var() / n + theirs.var() / n)
        assert abs(ours.std() - theirs.std()) < 0.05 * theirs.std() + 0.01


@pytest.mark.parametrize("side, size", [(24, 16), (20, 20)])
def test_view_is_the_resized_crop_of_its_box(side: int, size: int) -> None:
    """Inside the crop's border the view is torchvision's resized_crop (then flip) of the box its parameters define."""
    images = _images(16, 3, side)
    views = BatchViews(AugmentConfig(crop_min_scale=0.2, **{**OFF, "hflip": 0.5}), size, 3)
    params = views.params(np.arange(16) * 11 + 1, 0, side)
    out = views.apply(images, params)
    assert 0 < params.flip.sum() < 16
    for k in range(16):
        top, left, h, w = (int(v) for v in params.boxes[k])
        ref = F.resized_crop(images[k].float(), top, left, h, w, [size, size], interpolation=BILINEAR, antialias=False)
        ref = F.horizontal_flip(ref) if params.flip[k] else ref
        # the border pixels of an enlarged crop read the neighbours outside the box; resized_crop repeats the edge
        assert (out[k] - ref)[:, 1:-1, 1:-1].abs().max() < 1e-3


def test_affine_distortion_is_torchvisions_affine_with_the_drawn_parameters() -> None:
    side = 29
    cfg = AugmentConfig(crop_min_scale=1.0, crop_max_scale=1.0, affine_rotation=20, affine_shear=10, affine_scale_min=0.8,
                        affine_scale_max=1.2, affine_translate=0.1, affine_fill=255, **OFF)
    images, seeds = _images(6, 1, side), np.arange(6)
    out = BatchViews(cfg, side, 1).apply(images, BatchViews(cfg, side, 1).params(seeds, 0, side))
    u = uniforms(seeds, 0)
    for k in range(6):
        kw = dict(angle=20 * (2 * u[k, ANGLE] - 1), translate=[round(2.9 * (2 * u[k, TX] - 1)), round(2.9 * (2 * u[k, TY] - 1))],
                  scale=0.8 + 0.4 * u[k, SCALE], shear=[10 * (2 * u[k, SHEAR] - 1), 0.0], interpolation=BILINEAR)
        ref = F.affine(images[k].float(), fill=255.0, **kw)
        coverage = F.affine(torch.ones(1, side, side), fill=0.0, **kw)  # 1 inside, 0 outside, between at the edge
        edge = (coverage > 1e-6) & (coverage < 1 - 1e-6)  # torchvision weights the fill there twice
        assert (out[k] - ref)[~edge].abs().max() < 1e-3 and (~edge).float().mean() > 0.8


@pytest.mark.parametrize("name", ["brightness", "contrast", "saturation", "hue"])
def test_colour_adjustments_match_torchvision_per_image(name: str) -> None:
    x = torch.rand(6, 3, 10, 10, generator=torch.Generator().manual_seed(1))
    factors = [0.0, -0.3, 0.05, 0.5, 0.2, -0.45] if name == "hue" else [0.0, 0.6, 0.9, 1.0, 1.3, 1.6]
    ours = getattr(batch_colour, name)(x * 255, torch.tensor(factors).view(-1, 1, 1, 1))
    kernel = getattr(F, f"adjust_{name}")
    ref = torch.stack([kernel(x[k], factors[k]) for k in range(6)]) * 255
    assert (ours - ref).abs().max() < 1e-3


def test_grayscale_and_blur_match_torchvision_per_image() -> None:
    x = torch.rand(5, 3, 12, 12, generator=torch.Generator().manual_seed(2)) * 255
    gray = batch_colour.grayscale(x, np.array([True, False, True, False, False]))
    assert torch.allclose(gray[0], F.rgb_to_grayscale(x[0], 3), atol=1e-3) and torch.equal(gray[1], x[1])
    sigma = np.array([0.1, 0.0, 1.0, 2.0, 1.7])
    blurred = batch_colour.blur(x, sigma, 5)
    for k in range(5):
        ref = x[k] if sigma[k] == 0 else F.gaussian_blur(x[k], [5, 5], [float(sigma[k])] * 2)
        assert (blurred[k] - ref).abs().max() < 1e-3


def test_jitter_order_and_rates_follow_color_jitter() -> None:
    """Each view applies brightness then contrast (or the reverse) as its drawn order says, with probability jitter_p."""
    cfg = AugmentConfig(crop_min_scale=1.0, crop_max_scale=1.0, **{**OFF, "jitter_p": 0.8})
    views = BatchViews(cfg, 12, 1)
    images = _images(400, 1, 12)
    params = views.params(np.arange(400), 0, 12)
    assert abs(params.jitter.mean() - 0.8) < 0.06
    assert (params.factors[:, :2] >= 0.6).all() and (params.factors[:, :2] <= 1.4).all()
    out = views.apply(images, params)
    x = images.float()
    for k in range(40):
        b, c = (float(f) for f in params.factors[k, :2])
        steps = [lambda y: F.adjust_brightness(y, b), lambda y: F.adjust_contrast(y, c)]
        first, second = (steps[0], steps[1]) if list(params.order[k]).index(0) < list(params.order[k]).index(1) else (steps[1], steps[0])
        ref = second(first(x[k] / 255)) * 255 if params.jitter[k] else x[k]
        assert (out[k] - ref).abs().max() < 1e-2


@pytest.mark.parametrize("recipe, channels", [("digits", 1), ("defaults", 3)])
def test_whole_pipeline_statistics_match_the_per_image_views(recipe: str, channels: int) -> None:
    """2,000 views of one image each way: the same mean image, overall mean and spread (per-image: torchvision v2)."""
    cfg = load_recipe("digits").augment if recipe == "digits" else AugmentConfig(blur_p=0.5)
    yy, xx = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    ramp = ((xx * 8 + yy * 3) % 256).to(torch.uint8)
    image = torch.stack([ramp, ramp.flip(0), 255 - ramp])[:channels].contiguous()
    n, per_image = 2000, view_transform(cfg, 32, channels)
    ref = []
    for seed in range(n):
        torch.manual_seed(seed)
        ref.append(per_image(image).float())
    theirs = torch.stack(ref)
    ours = BatchViews(cfg, 32, channels).two_views(image.expand(n, -1, -1, -1).contiguous(), np.arange(n))[0]
    assert abs(ours.mean() - theirs.mean()) < 2 and abs(ours.std() / theirs.std() - 1) < 0.03
    assert (ours.mean(0) - theirs.mean(0)).abs().max() < 10  # ~4.5 standard errors of a pixel's mean over 2,000 views


def test_same_seeds_same_views_and_each_sample_depends_on_its_seed_alone() -> None:
    cfg = AugmentConfig(blur_p=0.5, affine_rotation=10)
    views = BatchViews(cfg, 16, 3)
    images, seeds = _images(12, 3, 20), np.arange(12) * 1000 + 7
    first = views.two_views(images, seeds)
    again = views.two_views(images.clone(), torch.as_tensor(seeds))
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    order = np.random.default_rng(0).permutation(12)
    shuffled = views.two_views(images[order], seeds[order])
    assert all(torch.allclose(a[order], b, atol=1e-4) for a, b in zip(first, shuffled))
    assert not torch.equal(first[0], first[1])  # the two views differ


def test_worker_count_does_not_change_a_batch(tmp_path: object) -> None:
    images = _images(64, 1, 16)
    store = ImageStore(images, np.arange(64) % 4, ["a", "b", "c", "d"], [f"{i}" for i in range(64)], [])
    views = BatchViews(AugmentConfig(), 16, 1)
    got = []
    for workers in (0, 2):
        sampler = PlanSampler()
        sampler.set_plan(shuffled_plan(64, 16, seed=3, epoch=2))
        batches = list(make_loader(KeyedImages(store), sampler, workers, pin_memory=False))
        got.append([views.two_views(x, seeds) + (labels,) for x, seeds, labels in batches])
    assert len(got[0]) == len(got[1]) == 4
    for ours, theirs in zip(*got):
        assert all(torch.equal(a, b) for a, b in zip(ours, theirs))
