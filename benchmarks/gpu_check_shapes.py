"""The sizes and the synthetic images of ``benchmarks/gpu_check.py``: the real check on a GPU, tiny on a CPU."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Shapes:
    """The sizes of one check: the real one on a GPU, or tiny ones on the CPU (``--dry-run``)."""

    device: str
    image_size: int
    classes: int
    per_class: int
    batch: int
    steps: int
    rounds: int
    matmul_n: int
    episodes: int
    backbone: str  # the recipe's resnet18; the dry run swaps in the small ConvNet to stay within seconds


REAL = Shapes("cuda", 32, 10, 320, 512, 10, 5, 8192, 200, "resnet18")
DRY = Shapes("cpu", 16, 4, 12, 8, 1, 2, 128, 3, "convnet")


def write_images(folder: Path, shapes: Shapes) -> Path:
    """Class folders of random PNGs (each class with its own mean colour, so fine-tuning has a signal)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(shapes.classes):
        tint = rng.integers(0, 256, 3)
        (folder / f"class{c:02d}").mkdir(parents=True, exist_ok=True)
        for i in range(shapes.per_class):
            noise = rng.integers(-60, 60, (shapes.image_size, shapes.image_size, 3))
            pixels = np.clip(tint + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"class{c:02d}" / f"{i:04d}.png")
    return folder
