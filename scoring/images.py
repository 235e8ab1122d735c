"""Image files -> normalised batches -> embeddings, with per-image errors instead of crashes.

Decoding runs in DataLoader worker processes (PIL holds the GIL for parts of a decode, so
processes beat threads for large JPEG sets); each image is framed as the model's metadata
says (``ModelInfo``: shorter side to ``resize_size``, centre crop ``image_size``, channels) by
``toolkit.data.store.decode_image``, the same code that prepared the training images, and
normalised in the main process by ``toolkit.data.preprocess.Normalizer``. A file that is missing or
cannot be decoded is reported with its reason and never stops the other images.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.utils.data import DataLoader, Dataset

from exporters.metadata import ModelInfo
from exporters.runtime import Backend
from scoring.image_lists import EmbedPaths
from toolkit.config import AugmentConfig
from toolkit.console import console
from toolkit.data.image_files import is_uri
from toolkit.data.image_files import load_image as _load_image
from toolkit.data.preprocess import Normalizer
from toolkit.data.remote import read_uri
from toolkit.data.support_views import support_view_embeddings
from toolkit.data.workers import worker_init_fn  # ignore Ctrl-C/SIGTERM, die with this process


def default_workers() -> int:
    """Decoding processes: the cores minus the one that runs the model, at least 1, at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def open_uri(uri: str) -> io.BytesIO:
    """The bytes of ``scheme://...`` (S3, GCS, HDFS, ``file://``, HTTP), given up after a timeout
    (``toolkit.data.remote.read_uri``).

    Raises:
        FileNotFoundError: no such object. TimeoutError: no answer in time. ToolkitError: pyarrow is not installed.
    """
    return io.BytesIO(read_uri(uri))


def load_image(path: str, info: ModelInfo) -> np.ndarray:
    """One file (or a ``scheme://`` URI, see ``open_uri``) as the model's uint8 input [C, S, S]
    (``toolkit.data.image_files.load_image``)."""
    pre = info.preprocessing
    return _load_image(open_uri(path) if is_uri(path) else path, pre.resize_size, pre.image_size,  # type: ignore[arg-type]
                       pre.channels)


def _reason(path: str, exc: Exception) -> str:
    if isinstance(exc, FileNotFoundError) or (not is_uri(path) and not os.path.exists(path)):
        return "no such file"
    if isinstance(exc, TimeoutError):
        return f"remote read timed out ({exc})"
    if isinstance(exc, IsADirectoryError):
        return "is a folder, not an image"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"unreadable image ({type(exc).__name__}: {text})" if text else f"unreadable image ({type(exc).__name__})"


class ImageFiles(Dataset):
    """Item i: (i, uint8 [C, S, S] or None, error or "") for ``paths[i]``."""

    def __init__(self, paths: list[str], info: ModelInfo) -> None:
        self.paths, self.info = paths, info

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, str]:
        path = self.paths[index]
        try:
            return index, load_image(path, self.info), ""
        except Exception as exc:  # noqa: BLE001 - any decoder failure is this image's error
            return index, None, _reason(path, exc)


@dataclass
class Batch:
    """Decoded images of one batch: ``images`` [n, C, S, S] uint8 for ``indices``; the rest failed."""

    indices: list[int]
    images: np.ndarray
    errors: dict[int, str]


def _collate(items: list[tuple[int, np.ndarray | None, str]]) -> Batch:
    ok = [(i, a) for i, a, _ in items if a is not None]
    images = np.stack([a for _, a in ok]) if ok else np.zeros((0,), dtype=np.uint8)
    return Batch([i for i, _ in ok], images, {i: e for i, a, e in items if a is None})


def decoded_batches(paths: list[str], info: ModelInfo, batch_size: int, workers: int) -> Iterator[Batch]:
    """Batches of decoded images in ``paths`` order; ``workers`` = 0 decodes in this process."""
    loader = DataLoader(ImageFiles(paths, info), batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=_collate, worker_init_fn=worker_init_fn() if workers else None,
                        prefetch_factor=4 if workers else None)
    yield from loader


def progress_bar(enabled: bool) -> Progress:
    """A transient bar on stderr; off when stderr is not a terminal (logs, CI, pipes)."""
    return Progress(TextColumn("embedding"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]} img/s"),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True,
                    disable=not (enabled and console.is_terminal))


def embed_files(backend: Backend, paths: list[str], *, batch_size: int = 64, workers: int = 0,
                progress: bool = True, views: int = 0,
                augment: AugmentConfig | None = None) -> tuple[np.ndarray, list[str], dict[str, str]]:
    """Embeds image files with ``backend``; the ``embed_paths`` contract of ``scoring.image_lists.EmbedPaths``.

    Args:
        backend: any ``exporters.runtime.Backend``; its metadata frames and normalises the images.
        paths: image files, in any order; duplicates are embedded each time.
        batch_size: images per model call.
        workers: DataLoader decoding processes (0 = decode here).
        progress: show a progress bar on stderr.
        views, augment: with ``views`` > 0, each embedding is the unit mean of the image's own and ``views``
            views of ``augment`` (test-time augmentation, ``toolkit.data.support_views``; seeded by the pixels).

    Returns:
        [len(ok_paths), D] float32 embeddings, ok_paths in input order, {path: reason} for the rest.
    """
    pre = backend.info.preprocessing
    normalizer = Normalizer(pre.mean, pre.std, torch.device("cpu"))

    def embed_pixels(pixels: torch.Tensor) -> np.ndarray:
        return backend.embed(normalizer(pixels).numpy())

    chunks: list[np.ndarray] = []
    ok_paths: list[str] = []
    errors: dict[str, str] = {}
    start = time.perf_counter()
    with progress_bar(progress) as bar:
        task = bar.add_task("embed", total=len(paths), rate="-")
        done = 0
        for batch in decoded_batches(paths, backend.info, batch_size, workers):
            for index, reason in batch.errors.items():
                errors[paths[index]] = reason
            if batch.indices:
                images = torch.from_numpy(batch.images)
                own = embed_pixels(images)
                if views:
                    assert augment is not None, "views need the augmentation to draw them from"
                    own = support_view_embeddings(embed_pixels, images, own, augment, pre.image_size, pre.channels,
                                                  views, batch_size=batch_size)
                chunks.append(own)
                ok_paths += [paths[i] for i in batch.indices]
            done += len(batch.indices) + len(batch.errors)
            rate = done / max(time.perf_counter() - start, 1e-9)
            bar.update(task, completed=done, rate=f"{rate:,.0f}")
    dim = backend.info.embedding_dim
    embeddings = np.concatenate(chunks) if chunks else np.zeros((0, dim), dtype=np.float32)
    return embeddings, ok_paths, errors


def embedder(backend: Backend, *, batch_size: int = 64, workers: int = 0, progress: bool = True, views: int = 0,
             augment: AugmentConfig | None = None) -> EmbedPaths:
    """``embed_files`` with its settings bound: the ``embed_paths`` callable the scoring modes take."""

    def embed_paths(paths: list[str]) -> tuple[np.ndarray, list[str], dict[str, str]]:
        return embed_files(backend, paths, batch_size=batch_size, workers=workers, progress=progress, views=views,
                           augment=augment)

    return embed_paths
