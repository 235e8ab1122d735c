"""Image sets of `toolkit score` (support folders, distinct gallery files), and embedding each distinct image once.

Reading an image list (folder, CSV, .txt) is ``toolkit.data.image_files.read_image_list``.

``embed_unique`` is the only place the scoring modes call the model: it hands the distinct
paths to an ``embed_paths(paths) -> (embeddings [len(ok_paths), D], ok_paths, errors {path:
one-line reason})`` callable (``scoring.images.embedder`` in the CLI, a fake in tests).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scoring.csv_out import one_line
from toolkit.metrics.similarity import l2_normalise
from toolkit.data.image_files import images_under, is_uri
from toolkit.data.sources import IMAGE_EXTENSIONS
from toolkit.data.walk import report_skipped
from toolkit.errors import ToolkitError

EmbedPaths = Callable[[list[str]], tuple[np.ndarray, list[str], dict[str, str]]]
NON_FINITE = "non-finite embedding (NaN or inf): the model's weights or outputs are broken"


def canonical(path: str) -> str:
    """``path`` made absolute with symlinks and ``..`` resolved (URIs as they are): one spelling per file."""
    return path if is_uri(path) else os.path.realpath(path)


def distinct_files(paths: Iterable[str]) -> list[str]:
    """``paths`` without the entries that name a file listed earlier (by ``canonical``), first spelling kept.

    The gallery of ``toolkit score`` and the index (which stores canonical paths) so rank each image once.
    """
    seen: set[str] = set()
    kept = []
    for path in paths:
        key = canonical(path)
        if key not in seen:
            seen.add(key)
            kept.append(path)
    return kept


@dataclass(frozen=True)
class SupportSet:
    """A few-shot support set read from a folder with one sub-folder per class.

    Attributes:
        paths: every support image.
        labels: [len(paths)] ints indexing ``class_names``.
        class_names: the sub-folder names, sorted.
    """

    paths: list[str]
    labels: np.ndarray
    class_names: list[str]


def read_support_folder(path: str | Path) -> SupportSet:
    """A support set from ``path/<class>/**/<image>``; files directly in ``path`` are ignored.

    Raises:
        ToolkitError: ``path`` is not a folder, has no class sub-folders, or a class has no image.
    """
    path = Path(path)
    if not path.is_dir():
        raise ToolkitError(f"{path}: not a folder; expected one sub-folder of images per class")
    root = path.resolve()
    folders = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    loops = [d for d in folders if root.is_relative_to(d.resolve())]  # a link back to the support folder or above
    classes = [d for d in folders if d not in loops]
    report_skipped(path, [(str(d), "symbolic link loop (links back to a folder it is in)") for d in loops])
    if not classes:
        raise ToolkitError(f"{path}: no class sub-folders; expected one sub-folder of images per class")
    paths: list[str] = []
    labels: list[int] = []
    for label, folder in enumerate(classes):
        images = images_under(folder)
        if not images:
            looked_for = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise ToolkitError(f"{folder}: class folder has no images (looked for {looked_for})")
        paths += images
        labels += [label] * len(images)
    return SupportSet(paths, np.asarray(labels, dtype=np.int64), [d.name for d in classes])


def drop_non_finite(embeddings: np.ndarray, ok_paths: list[str],
                    errors: dict[str, str]) -> tuple[np.ndarray, list[str], dict[str, str]]:
    """Moves the images whose embedding holds a NaN or an infinity from the embedded to the failed.

    Returns:
        The finite rows of ``embeddings`` [M', D], their paths, and ``errors`` plus one
        ``NON_FINITE`` reason per dropped path.
    """
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        return embeddings, ok_paths, errors
    finite = np.isfinite(embeddings).all(axis=1)
    if finite.all():
        return embeddings, ok_paths, errors
    errors = {**errors, **{p: NON_FINITE for p, keep in zip(ok_paths, finite.tolist()) if not keep}}
    return embeddings[finite], [p for p, keep in zip(ok_paths, finite.tolist()) if keep], errors


def embed_unique(
    paths: Iterable[str], embed_paths: EmbedPaths
) -> tuple[np.ndarray, dict[str, int], dict[str, str]]:
    """Embeds each distinct path once.

    An image whose embedding is not finite (a model with NaN weights) counts as not embedded,
    with the reason ``NON_FINITE``, so every scoring mode gives its rows an error.

    Returns:
        [M, D] unit embeddings, {path: row} for the images that embedded, and
        {path: reason} for those that did not.
    """
    unique = list(dict.fromkeys(paths))
    if not unique:
        return np.zeros((0, 0), dtype=np.float32), {}, {}
    embeddings, ok_paths, errors = embed_paths(unique)
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if len(ok_paths) == 0:
        embeddings = embeddings.reshape(0, embeddings.shape[-1] if embeddings.ndim == 2 else 0)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(ok_paths):
        raise ValueError(f"embed_paths returned {embeddings.shape} embeddings for {len(ok_paths)} paths")
    embeddings, ok_paths, errors = drop_non_finite(embeddings, list(ok_paths), errors)
    row_of = {p: i for i, p in enumerate(ok_paths)}
    failed = {p: errors.get(p, "not embedded (no reason given)") for p in unique if p not in row_of}
    return l2_normalise(embeddings), row_of, failed


def first_failure(paths: Sequence[str], failed: dict[str, str]) -> str:
    """``path: reason`` of the first of ``paths`` in ``failed`` (``embed_unique``'s), for a "none could be read" error."""
    first = next(p for p in paths if p in failed)
    return f"{first}: {one_line(failed[first])}"
