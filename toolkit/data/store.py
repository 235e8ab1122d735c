"""Decode images once into one uint8 tensor (or on demand when too large), skipping unreadable files.

Decoding up front (in threads: PIL releases the GIL while decoding) makes each epoch's data
work only augmentation, and finds corrupt files before training starts instead of in the
middle of an epoch. Images are resized so the shorter side is ``load_size`` and centre-cropped
to a square, the framing the evaluation transform uses anyway. Sets larger than
``data.cache_gb`` are checked up front (PIL's ``verify``) and decoded per step instead.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageOps

from toolkit.config import DataConfig
from toolkit.console import warn
from toolkit.data.memory import check_cache_fits
from toolkit.data.preprocess import resize_size
from toolkit.data.sources import ImageSet
from toolkit.errors import ToolkitError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class LazyImages:
    """Images decoded from their files on access; indexes like a uint8 (N, C, S, S) tensor."""

    def __init__(self, paths: list[str], size: int, channels: int, rotations: np.ndarray | None) -> None:
        self.paths, self.size, self.channels, self.rotations = paths, size, channels, rotations
        self.shape = (len(paths), channels, size, size)

    def _one(self, index: int) -> torch.Tensor:
        try:
            array = decode_image(self.paths[index], self.size, self.channels)
        except Exception as exc:  # noqa: BLE001
            raise ToolkitError(f"{self.paths[index]}: could not be decoded ({type(exc).__name__}: {exc})") from None
        if self.rotations is not None and self.rotations[index]:
            array = np.rot90(array, k=int(self.rotations[index]), axes=(1, 2))
        return torch.from_numpy(np.array(array, copy=True))

    def __getitem__(self, index: int | slice) -> torch.Tensor:
        if isinstance(index, slice):
            return torch.stack([self._one(i) for i in range(*index.indices(self.shape[0]))])
        return self._one(int(index))


@dataclass
class ImageStore:
    """Decoded images ready for augmentation.

    Attributes:
        images: uint8 tensor (N, C, S, S), or ``LazyImages`` indexing the same way.
        labels: int64 array (N,) or None.
        class_names: names indexed by ``labels``.
        paths: where each image came from.
        skipped: (path, reason) of every image that could not be decoded.
    """

    images: torch.Tensor | LazyImages
    labels: np.ndarray | None
    class_names: list[str]
    paths: list[str]
    skipped: list[tuple[str, str]]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def labeled(self) -> bool:
        return self.labels is not None


def default_normalization(channels: int, mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[list[float], list[float]]:
    """The per-channel mean and std used to normalise inputs (ImageNet statistics by default)."""
    if not mean:
        mean = IMAGENET_MEAN if channels == 3 else (float(np.mean(IMAGENET_MEAN)),)
    if not std:
        std = IMAGENET_STD if channels == 3 else (float(np.mean(IMAGENET_STD)),)
    if len(mean) != channels or len(std) != channels:
        raise ToolkitError(f"data.mean/data.std need {channels} values each (data.channels={channels}), got {list(mean)} / {list(std)}")
    return [float(m) for m in mean], [float(s) for s in std]


def ignore_pil_bomb_warnings() -> None:
    """Silence PIL's DecompressionBombWarning: it names no file and prints its source line.

    ``decode_image`` says the same in one line with the file's name instead. (Twice the limit
    is PIL's DecompressionBombError, which stays an error of that image.)
    """
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


ignore_pil_bomb_warnings()


def decode_image(path: str, size: int, channels: int) -> np.ndarray:
    """Open one image file as a (C, size, size) uint8 array: shorter side resized, centre-cropped."""
    with Image.open(path) as img:
        limit = Image.MAX_IMAGE_PIXELS
        if limit and img.width * img.height > limit:
            warn(f"{path}: {img.width}x{img.height} = {img.width * img.height:,} pixels is over PIL's "
                 f"decompression-bomb limit of {limit:,}; decoding it anyway")
        img.draft("RGB" if channels == 3 else "L", (size, size))  # JPEG: decode at reduced scale
        return to_square_array(img, size, channels)


def to_square_array(img: Image.Image, size: int, channels: int) -> np.ndarray:
    """Convert a PIL image to (C, size, size) uint8: mode, resize of the shorter side, centre crop."""
    img = ImageOps.exif_transpose(img)  # phone photos store their rotation in EXIF
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # 16-bit / float images: stretch to 8 bits
        array = np.asarray(img, dtype=np.float32)
        low, high = float(array.min()), float(array.max())
        img = Image.fromarray(((array - low) * (255.0 / max(high - low, 1e-6))).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "P", "PA"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)  # transparent = white, not black
    img = img.convert("RGB" if channels == 3 else "L")
    w, h = img.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), Image.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    array = np.asarray(img, dtype=np.uint8)
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def _verify(path: str) -> np.ndarray | str:
    try:
        with Image.open(path) as img:
            img.verify()
        return np.zeros(0, dtype=np.uint8)
    except Exception as exc:  # noqa: BLE001
        return f"{type(exc).__name__}: {exc}".splitlines()[0]


def build_store(images: ImageSet, size: int, channels: int, cache_gb: float = 8.0, threads: int | None = None) -> ImageStore:
    """Decode ``images`` at ``size`` x ``size``; unreadable files are skipped and listed.

    Sets that need more than ``cache_gb`` GiB are verified now and decoded on access.

    Raises:
        ToolkitError: no image could be read.
    """
    n = len(images)
    if n == 0:
        raise ToolkitError("no images to load")
    lazy = images.arrays is None and n * channels * size * size > cache_gb * 2**30
    if lazy:
        with ThreadPoolExecutor(max_workers=threads or min(8, os.cpu_count() or 1)) as pool:
            decoded: list[np.ndarray | str] = list(pool.map(_verify, images.paths, chunksize=256))
    elif images.arrays is not None:
        check_cache_fits(n, channels, size)
        decoded = [to_square_array(Image.fromarray(a), size, channels) for a in images.arrays]
    else:
        check_cache_fits(n, channels, size)

        def load(path: str) -> np.ndarray | str:
            try:
                return decode_image(path, size, channels)
            except Exception as exc:  # noqa: BLE001 - any decoder failure means "unreadable"
                return f"{type(exc).__name__}: {exc}".splitlines()[0]

        with ThreadPoolExecutor(max_workers=threads or min(8, os.cpu_count() or 1)) as pool:
            decoded = list(pool.map(load, images.paths, chunksize=64))
    ok = np.array([not isinstance(d, str) for d in decoded], dtype=bool)
    skipped = [(p, d) for p, d in zip(images.paths, decoded) if isinstance(d, str)]
    if skipped:
        first_path, first_reason = skipped[0]
        warn(f"skipped {len(skipped)} unreadable image(s), first: {first_path} ({first_reason})")
    if not ok.any():
        raise ToolkitError(f"none of the {n} images could be read (first: {skipped[0][0]}: {skipped[0][1]})")
    labels = None if images.labels is None else images.labels[ok]
    paths = [p for p, good in zip(images.paths, ok) if good]
    if lazy:
        rotations = None if images.rotations is None else images.rotations[ok]
        return ImageStore(LazyImages(paths, size, channels, rotations), labels, images.class_names, paths, skipped)
    stacked = np.stack([d for d in decoded if not isinstance(d, str)])
    if images.rotations is not None:
        for k in (1, 2, 3):
            rows = np.flatnonzero(images.rotations[ok] == k)
            stacked[rows] = np.rot90(stacked[rows], k=k, axes=(2, 3))
    return ImageStore(torch.from_numpy(np.ascontiguousarray(stacked)), labels, images.class_names, paths, skipped)


@dataclass
class LoadedData:
    """The decoded splits of a run and what was skipped on the way (``val``: the validation split)."""

    train: ImageStore
    test: ImageStore | None
    source: str
    notes: list[str]
    val: ImageStore | None = None

    @property
    def skipped(self) -> list[tuple[str, str]]:
        return (self.train.skipped + (self.test.skipped if self.test is not None else [])
                + (self.val.skipped if self.val is not None else []))

    def describe(self) -> str:
        """One line for the console: source, split sizes, classes and the loader's notes."""
        return (f"data: {self.source}: {len(self.train)} train images"
                + (f", {len(self.test)} test images" if self.test is not None else "")
                + (f", {len(self.val)} validation images" if self.val is not None else "")
                + (f", {len(self.train.class_names)} classes" if self.train.labeled else ", unlabeled")
                + "".join(f"; {n}" for n in self.notes))


def load_data(cfg: DataConfig) -> LoadedData:
    """List (``toolkit.data.sources.load_splits``) and decode the train and test splits of ``cfg``."""
    from toolkit.data.sources import load_splits

    if cfg.channels not in (1, 3):
        raise ToolkitError(f"data.channels must be 1 or 3, got {cfg.channels}")
    size = resize_size(cfg.image_size, cfg.load_size)
    splits = load_splits(cfg)
    train = build_store(splits.train, size, cfg.channels, cfg.cache_gb)
    test = build_store(splits.test, size, cfg.channels, cfg.cache_gb) if splits.test is not None and len(splits.test) else None
    val = build_store(splits.val, size, cfg.channels, cfg.cache_gb) if splits.val is not None and len(splits.val) else None
    return LoadedData(train=train, test=test, source=splits.source, notes=splits.notes, val=val)
