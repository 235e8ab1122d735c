"""SimSiam's two views of a whole batch at once: tensor operations on the cached uint8 images, on the device.

The per-image path (``toolkit.data.augment.view_transform``) calls torchvision's v2 transforms
once per image and view in the loader's workers; on 28-32 px images that Python work costs more
than the step itself (``benchmarks/pretrain_ab.py``), and on a GPU a few CPU workers cannot feed
the device. Here a batch of cached images (N, C, S, S) goes through, with the same distributions:

1. geometry: the affine distortion (Koch et al. 2015), the random resized crop and the horizontal
   flip composed into one affine map per view, sampled once (``grid_sample``, bilinear);
2. colour jitter with p (brightness, contrast, saturation, hue, in a random order per view);
3. grayscale with p; 4. Gaussian blur with p (reflect padding). The flip commutes with 2-4.

Three differences from the per-image path: one bilinear interpolation instead of two (affine,
then crop), no antialiasing when a crop is shrunk (a cache larger than the input: ``data.load_size``),
and no rounding to uint8 between operations. Outputs are float32 in [0, 255].

Every number a view draws is a counter-based hash (SplitMix64) of the sample's plan seed, the view
and the draw's index, so a sample's views depend on its seed alone: not on the batch around it,
the number of workers, or an interruption and resume.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from toolkit.config import AugmentConfig
from toolkit.data.batch_colour import blur, colour_jitter, grayscale, to_device

# Column of each draw in a view's uniforms (torchvision's order of draws within each transform).
ANGLE, TX, TY, SCALE, SHEAR = 0, 1, 2, 3, 4
CROP_TRIES, CROP = 10, 5  # (area, log-ratio) of try t at CROP + 2t, CROP + 2t + 1
CROP_I, CROP_J, FLIP, JITTER = 25, 26, 27, 28
FACTORS, ORDER = 29, 33  # brightness, contrast, saturation, hue factors; 4 keys of the random order
GRAY, BLUR, SIGMA = 37, 38, 39
DRAWS = 40
GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on uint64 (wrapping arithmetic)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniforms(seeds: np.ndarray, view: int, draws: int = DRAWS) -> np.ndarray:
    """(N, draws) float64 uniforms in [0, 1): draw k of ``view`` for each seed, a function of (seed, view, k) alone."""
    with np.errstate(over="ignore"):
        state = _mix(np.asarray(seeds).astype(np.uint64) + GOLDEN)
        counters = (np.arange(draws, dtype=np.uint64) + np.uint64(view * draws + 1)) * GOLDEN
        bits = _mix(state[:, None] + counters[None, :])
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


def crop_boxes(u: np.ndarray, side: int, scale: tuple[float, float],
               ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> np.ndarray:
    """(N, 4) int boxes (top, left, height, width): torchvision's RandomResizedCrop.get_params on a square image.

    Ten tries of an area share in ``scale`` and a log-uniform aspect ratio; the first that fits
    wins, else the whole image (the centre crop of a square image at ratios that include 1).
    """
    area = side * side * (scale[0] + (scale[1] - scale[0]) * u[:, CROP:CROP + 2 * CROP_TRIES:2])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = np.exp(log_lo + (log_hi - log_lo) * u[:, CROP + 1:CROP + 2 * CROP_TRIES:2])
    w = np.round(np.sqrt(area * aspect)).astype(np.int64)
    h = np.round(np.sqrt(area / aspect)).astype(np.int64)
    fits = (w > 0) & (w <= side) & (h > 0) & (h <= side)
    first = fits.argmax(axis=1)
    rows = np.arange(len(u))
    found = fits[rows, first]
    h = np.where(found, h[rows, first], side)
    w = np.where(found, w[rows, first], side)
    top = np.where(found, np.floor(u[:, CROP_I] * (side - h + 1)), 0).astype(np.int64)
    left = np.where(found, np.floor(u[:, CROP_J] * (side - w + 1)), 0).astype(np.int64)
    return np.stack([top, left, h, w], axis=1)


def inverse_affine(u: np.ndarray, cfg: AugmentConfig, side: int) -> np.ndarray:
    """(N, 2, 3) maps from output to input pixel coordinates (origin at the image centre) of the affine distortion.

    torchvision's ``RandomAffine`` parameters (angle, integer translation, scale, x shear) and its
    ``_get_inverse_affine_matrix``; the identity when every ``affine_*`` setting is off.
    """
    n = len(u)
    angle = np.radians(cfg.affine_rotation * (2 * u[:, ANGLE] - 1))
    shift = cfg.affine_translate * side
    tx = np.round(shift * (2 * u[:, TX] - 1)) if cfg.affine_translate else np.zeros(n)
    ty = np.round(shift * (2 * u[:, TY] - 1)) if cfg.affine_translate else np.zeros(n)
    lo, hi = cfg.affine_scale_min, cfg.affine_scale_max
    scale = lo + (hi - lo) * u[:, SCALE] if (lo, hi) != (1.0, 1.0) else np.ones(n)
    shear = np.radians(cfg.affine_shear * (2 * u[:, SHEAR] - 1))
    a, c = np.cos(angle), np.sin(angle)  # shear_y = 0: cos(sy) = 1
    b, d = -(a * np.tan(shear) + np.sin(angle)), np.cos(angle) - c * np.tan(shear)
    linear = np.stack([np.stack([d, -b], 1), np.stack([-c, a], 1)], 1) / scale[:, None, None]
    offset = -np.einsum("nij,nj->ni", linear, np.stack([tx, ty], 1))
    return np.concatenate([linear, offset[:, :, None]], axis=2)


@dataclass
class ViewParams:
    """One view's parameters for each sample of a batch (CPU).

    Attributes:
        theta: (N, 2, 3) float64 ``affine_grid`` matrices (normalised output -> input coordinates).
        boxes: (N, 4) crop boxes (top, left, height, width) in the affine-distorted image.
        flip, jitter, gray: (N,) bool: which samples are flipped, jittered, turned gray.
        factors: (N, 4) brightness, contrast, saturation, hue factors; order: (N, 4) their order.
        sigma: (N,) blur sigma, 0 = no blur.
    """

    theta: np.ndarray
    boxes: np.ndarray
    flip: np.ndarray
    jitter: np.ndarray
    factors: np.ndarray
    order: np.ndarray
    gray: np.ndarray
    sigma: np.ndarray


def view_params(u: np.ndarray, cfg: AugmentConfig, side: int, size: int, channels: int) -> ViewParams:
    """The parameters ``u`` (``uniforms``) define for a view of ``size`` px from cached images of ``side`` px."""
    boxes = crop_boxes(u, side, (cfg.crop_min_scale, cfg.crop_max_scale))
    top, left, h, w = boxes.T.astype(np.float64)
    flip = u[:, FLIP] < cfg.hflip
    # output (normalised, [-1, 1]) -> crop box -> distorted image (pixels, centred) -> input (normalised)
    half_out, half_in = size / 2, side / 2
    scale_out = np.zeros((len(u), 2, 2))
    scale_out[:, 0, 0] = np.where(flip, -1.0, 1.0) * w / size * half_out
    scale_out[:, 1, 1] = h / size * half_out
    centre = np.stack([left + w / 2 - half_in, top + h / 2 - half_in], axis=1)
    inverse = inverse_affine(u, cfg, side)
    linear = inverse[:, :, :2] @ scale_out / half_in
    offset = (np.einsum("nij,nj->ni", inverse[:, :, :2], centre) + inverse[:, :, 2]) / half_in
    theta = np.concatenate([linear, offset[:, :, None]], axis=2)
    b, c, s, hue = cfg.brightness, cfg.contrast, cfg.saturation, cfg.hue
    lows, highs = np.array([max(0.0, 1 - b), max(0.0, 1 - c), max(0.0, 1 - s), -hue]), np.array([1 + b, 1 + c, 1 + s, hue])
    factors = lows + (highs - lows) * u[:, FACTORS:FACTORS + 4]
    if channels == 1:  # saturation and hue are undefined on one channel (as in view_transform)
        factors[:, 2:] = (1.0, 0.0)
    jitter = u[:, JITTER] < cfg.jitter_p
    gray = (u[:, GRAY] < cfg.grayscale_p) & (channels == 3)
    sigma = np.where(u[:, BLUR] < cfg.blur_p, 0.1 + 1.9 * u[:, SIGMA], 0.0)
    return ViewParams(theta, boxes, flip, jitter, factors, np.argsort(u[:, ORDER:ORDER + 4], axis=1), gray, sigma)


def geometry(images: torch.Tensor, theta: torch.Tensor, size: int, fill: float) -> torch.Tensor:
    """Sample (N, C, size, size) float views of uint8 ``images`` at the affine maps ``theta`` (bilinear; outside = ``fill``)."""
    x = images.float() - fill
    base = (torch.arange(size, dtype=theta.dtype, device=theta.device) * 2 + 1) / size - 1  # pixel centres in [-1, 1]
    bx, by = base.view(1, 1, size), base.view(1, size, 1)
    t = theta.view(-1, 6, 1, 1).unbind(1)
    grid = torch.stack([t[0] * bx + t[1] * by + t[2], t[3] * bx + t[4] * by + t[5]], dim=-1)  # F.affine_grid, without its bmm
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


class BatchViews:
    """SimSiam's views of whole batches (``data.batch_augment``): ``two_views(images, seeds)``."""

    def __init__(self, cfg: AugmentConfig, size: int, channels: int) -> None:
        self.cfg, self.size, self.channels = cfg, size, channels
        self.kernel = max(3, int(0.1 * size) // 2 * 2 + 1)  # as view_transform: about 10% of the side, odd

    def params(self, seeds: np.ndarray, view: int, side: int) -> ViewParams:
        """The parameters of ``view`` (0 or 1) for each seed, on cached images of ``side`` px."""
        return view_params(uniforms(seeds, view), self.cfg, side, self.size, self.channels)

    def apply(self, images: torch.Tensor, p: ViewParams) -> torch.Tensor:
        """The views ``p`` defines of uint8 ``images`` (N, C, S, S), as float32 (N, C, size, size) in [0, 255]."""
        device = images.device
        x = geometry(images, to_device(p.theta, device, torch.float32), self.size, float(self.cfg.affine_fill))
        x = colour_jitter(x, p.factors, p.order, p.jitter)
        x = grayscale(x, p.gray)
        return blur(x, p.sigma, self.kernel)

    @torch.no_grad()
    def two_views(self, images: torch.Tensor, seeds: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """SimSiam's two views of each image of a batch (views 0 and 1 of each sample's seed), in one pass."""
        seeds = seeds.cpu().numpy() if isinstance(seeds, torch.Tensor) else np.asarray(seeds)
        side = images.shape[-1]
        first, second = self.params(seeds, 0, side), self.params(seeds, 1, side)
        both = ViewParams(**{f.name: np.concatenate([getattr(first, f.name), getattr(second, f.name)]) for f in fields(ViewParams)})
        with torch.autocast(images.device.type, enabled=False):
            views = self.apply(torch.cat([images, images]), both)
        return views[: len(seeds)], views[len(seeds):]
