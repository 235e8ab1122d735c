"""Shared fixtures: small generated image folders, so no test needs downloaded data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

# Two cores: one torch thread per test process avoids oversubscription when subprocesses run too.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

REPO = Path(__file__).resolve().parent.parent


def write_image(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def shape_image(label: int, rng: np.random.Generator, size: int = 24, rgb: bool = True) -> np.ndarray:
    """A noisy image whose class is a bright square at a class-specific position and colour."""
    image = rng.integers(0, 60, size=(size, size, 3), dtype=np.uint8)
    y, x = divmod(label % 4, 2)
    half = size // 2
    colour = np.array([(label * 70) % 256, 200, 255 - (label * 50) % 256], dtype=np.uint8)
    image[y * half:(y + 1) * half - 2, x * half:(x + 1) * half - 2] = colour
    return image if rgb else image.mean(axis=2).astype(np.uint8)


@pytest.fixture
def class_folder(tmp_path: Path) -> Path:
    """tmp/classes/<class>/<i>.png: 4 classes x 12 images, mixed RGB and grayscale files."""
    rng = np.random.default_rng(0)
    root = tmp_path / "classes"
    for label in range(4):
        for i in range(12):
            write_image(root / f"c{label}" / f"{i:02d}.png", shape_image(label, rng, rgb=i % 3 != 0))
    return root


@pytest.fixture
def split_folder(tmp_path: Path) -> Path:
    """tmp/cifar/{train,test}/<class>/<i>.jpg in the CIFAR layout."""
    rng = np.random.default_rng(1)
    root = tmp_path / "cifar"
    for split, count in (("train", 10), ("test", 4)):
        for label in range(3):
            for i in range(count):
                write_image(root / split / f"k{label}" / f"{i:02d}.jpg", shape_image(label, rng))
    return root


# Tiny exported models and image folders shared by the exporters/ and scoring/ tests.
from tests.tiny_models import exported_run, images  # noqa: E402,F401
