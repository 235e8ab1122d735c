"""Colour jitter, grayscale and Gaussian blur of a batch with per-sample parameters (``toolkit.data.batch_augment``).

Each operation follows the formula of torchvision's v2 functional kernel of the same name, on
float32 images in [0, 255], with one factor per sample instead of one per call. Which samples an
operation touches is decided on the CPU (numpy masks), so the device never waits on a ``.any()``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

LUMA = (0.2989, 0.587, 0.114)  # torchvision's rgb_to_grayscale weights
BOUND = 255.0


def to_device(values: np.ndarray, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``values`` on ``device``; to a GPU through pinned memory without waiting (a pageable copy would sync the stream)."""
    tensor = torch.as_tensor(values, dtype=dtype)
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _column(values: np.ndarray, x: torch.Tensor) -> torch.Tensor:
    return to_device(values, x.device, x.dtype).view(-1, 1, 1, 1)


def luma(x: torch.Tensor) -> torch.Tensor:
    """(N, 1, H, W) grayscale of (N, C, H, W) images (C = 1 is its own grayscale)."""
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (r * LUMA[0] + g * LUMA[1] + b * LUMA[2]).unsqueeze(1)


def blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """``factor * x + (1 - factor) * other``, clamped to [0, 255] (torchvision's ``_blend``)."""
    return (x * factor + other * (1.0 - factor)).clamp(0.0, BOUND)


def brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return blend(x, torch.zeros_like(x), factor)


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return blend(x, luma(x).mean(dim=(1, 2, 3), keepdim=True), factor)


def saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return x if x.shape[1] == 1 else blend(x, luma(x), factor)


def hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue by ``shift`` (a fraction of the circle) in HSV space (torchvision's ``adjust_hue``)."""
    if x.shape[1] == 1:
        return x
    rgb = x / BOUND
    value, _ = rgb.max(dim=1, keepdim=True)
    low, _ = rgb.min(dim=1, keepdim=True)
    chroma = value - low
    sat = torch.where(value > 0, chroma / value.clamp_min(1e-12), torch.zeros_like(value))
    safe = chroma.clamp_min(1e-12)
    r, g, b = rgb.unbind(1)
    r, g, b = r.unsqueeze(1), g.unsqueeze(1), b.unsqueeze(1)
    h = torch.where(value == r, ((g - b) / safe) % 6, torch.where(value == g, (b - r) / safe + 2, (r - g) / safe + 4))
    h = torch.where(chroma > 0, h / 6, torch.zeros_like(h))
    h = (h + shift) % 1.0
    out = []
    for n in (5.0, 3.0, 1.0):  # r, g, b of an HSV colour: v - v s max(0, min(k, 4 - k, 1)), k = (n + 6h) mod 6
        k = (n + h * 6) % 6
        out.append(value - value * sat * torch.clamp(torch.minimum(k, 4 - k), 0.0, 1.0))
    return torch.cat(out, dim=1).clamp(0.0, 1.0) * BOUND


OPS = (brightness, contrast, saturation, hue)


def colour_jitter(x: torch.Tensor, factors: np.ndarray, order: np.ndarray, active: np.ndarray) -> torch.Tensor:
    """torchvision's ColorJitter on the ``active`` samples: the four adjustments in each sample's ``order``.

    Args:
        x: (N, C, H, W) float images in [0, 255].
        factors: (N, 4) brightness, contrast, saturation factors and the hue shift.
        order: (N, 4) a permutation of 0..3 per sample (the adjustments' order).
        active: (N,) bool, the samples jittered.
    """
    identity = np.array([1.0, 1.0, 1.0, 0.0])
    if not active.any():
        return x
    x = x.clone()
    for position in range(4):
        for op, adjust in enumerate(OPS):
            rows = np.flatnonzero(active & (order[:, position] == op) & (factors[:, op] != identity[op]))
            if len(rows) == 0 or (op >= 2 and x.shape[1] == 1):
                continue
            index = to_device(rows, x.device)
            x[index] = adjust(x[index], _column(factors[rows, op], x))
    return x


def grayscale(x: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
    """The ``rows`` (a bool mask) of RGB images turned gray (three equal channels)."""
    picked = np.flatnonzero(rows)
    if len(picked) == 0 or x.shape[1] == 1:
        return x
    x = x.clone()
    index = to_device(picked, x.device)
    x[index] = luma(x[index]).expand(-1, x.shape[1], -1, -1)
    return x


def gaussian_kernels(sigma: np.ndarray, size: int) -> np.ndarray:
    """(N, size) normalised 1-D Gaussian kernels (torchvision's ``_get_gaussian_kernel1d``)."""
    half = (size - 1) * 0.5
    t = np.linspace(-half, half, size)
    pdf = np.exp(-0.5 * (t[None, :] / sigma[:, None]) ** 2)
    return pdf / pdf.sum(axis=1, keepdims=True)


def blur(x: torch.Tensor, sigma: np.ndarray, size: int) -> torch.Tensor:
    """Gaussian blur of the samples with ``sigma > 0`` (separable, reflect padding, one sigma per sample)."""
    picked = np.flatnonzero(sigma > 0)
    if len(picked) == 0:
        return x
    n, c, h, w = len(picked), x.shape[1], x.shape[2], x.shape[3]
    kernels = to_device(np.repeat(gaussian_kernels(sigma[picked], size), c, axis=0), x.device, x.dtype)
    index = to_device(picked, x.device)
    pad = size // 2
    y = F.pad(x[index].reshape(1, n * c, h, w), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, kernels.view(n * c, 1, 1, size), groups=n * c)
    y = F.conv2d(y, kernels.view(n * c, 1, size, 1), groups=n * c)
    x = x.clone()
    x[index] = y.view(n, c, h, w)
    return x
