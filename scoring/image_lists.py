"""Lists of images for `toolkit embed` / `toolkit score`, and embedding each distinct image once.

``embed_unique`` is the only place the scoring modes call the model: it hands the distinct
paths to an ``embed_paths(paths) -> (embeddings [len(ok_paths), D], ok_paths, errors {path:
one-line reason})`` callable (``scoring.images.embedder`` in the CLI, a fake in tests).
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.metrics.similarity import l2_normalise
from toolkit.data.csv_files import open_csv, resolve_entry
from toolkit.data.sources import IMAGE_EXTENSIONS
from toolkit.errors import ToolkitError

EmbedPaths = Callable[[list[str]], tuple[np.ndarray, list[str], dict[str, str]]]
NON_FINITE = "non-finite embedding (NaN or inf): the model's weights or outputs are broken"


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


def images_under(folder: Path) -> list[str]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    return [str(p) for p in files]


def is_uri(entry: str) -> bool:
    """True for ``scheme://...`` entries (s3://, gs://, hdfs://, file://): read through pyarrow's filesystems."""
    scheme, sep, _ = entry.partition("://")
    return bool(sep) and scheme.isidentifier() and len(scheme) > 1  # not a Windows drive letter


def resolve(entry: str, base: Path) -> str:
    """A list entry as a path string: URIs as they are, ``~`` expanded, relative entries against ``base``."""
    if is_uri(entry):
        return entry
    return str(resolve_entry(entry, base))


def read_image_list(path: str | Path) -> list[str]:
    """Image paths from a folder (recursive, sorted), a CSV with a ``path`` column or a .txt list.

    Relative entries of a CSV or .txt list resolve against the list's folder; blank lines and
    ``#`` comments in a .txt are skipped. Lists are UTF-8, with or without a byte-order mark.

    Raises:
        ToolkitError: a missing path, an empty folder or list, a CSV without ``path``.
    """
    path = Path(path)
    expected = "expected a folder of images, a .csv with a `path` column or a .txt list of paths"
    if not path.exists():
        raise ToolkitError(f"{path}: no such file or folder; {expected}")
    if path.is_dir():
        images = images_under(path)
        if not images:
            raise ToolkitError(f"{path}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
        return images
    suffix = path.suffix.lower()
    if suffix == ".txt":
        with open_csv(path) as f:
            lines = [line.strip() for line in f]
        images = [resolve(line, path.parent) for line in lines if line and not line.startswith("#")]
    elif suffix == ".csv":
        with open_csv(path) as f:
            reader = csv.reader(f)
            header = [c.strip() for c in next(reader, [])]
            if "path" not in header:
                raise ToolkitError(f"{path}: the header has columns {header}; expected a `path` column")
            col = header.index("path")
            images = []
            for row in reader:
                if not any(cell.strip() for cell in row):
                    continue
                entry = row[col].strip() if col < len(row) else ""
                if not entry:
                    raise ToolkitError(f"{path}: line {reader.line_num} has an empty `path`")
                images.append(resolve(entry, path.parent))
    else:
        raise ToolkitError(f"{path}: unsupported list type {suffix!r}; {expected}")
    if not images:
        raise ToolkitError(f"{path}: the list has no image paths")
    return images


def read_support_folder(path: str | Path) -> SupportSet:
    """A support set from ``path/<class>/**/<image>``; files directly in ``path`` are ignored.

    Raises:
        ToolkitError: ``path`` is not a folder, has no class sub-folders, or a class has no image.
    """
    path = Path(path)
    if not path.is_dir():
        raise ToolkitError(f"{path}: not a folder; expected one sub-folder of images per class")
    classes = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
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
