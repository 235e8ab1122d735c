"""Image files named by the user: lists of images (folder, CSV, .txt) and one file as a model input.

The lowest layer that exporters (int8 calibration, parity checks) and scoring jobs both use.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.data.csv_files import open_csv, resolve_entry
from toolkit.data.sources import IMAGE_EXTENSIONS
from toolkit.data.store import decode_image
from toolkit.data.walk import find_files, report_skipped
from toolkit.errors import ToolkitError


def load_image(path: str, resize_size: int, image_size: int, channels: int) -> np.ndarray:
    """One file as a model's uint8 input [C, S, S]: shorter side to ``resize_size``, centre crop ``image_size``."""
    array = decode_image(path, resize_size, channels)
    if resize_size != image_size:
        top = (array.shape[1] - image_size) // 2
        left = (array.shape[2] - image_size) // 2
        array = array[:, top:top + image_size, left:left + image_size]
    return np.ascontiguousarray(array)


def load_readable(paths: list[str], resize_size: int, image_size: int, channels: int) -> list[np.ndarray]:
    """``load_image`` of every path that can be read; unreadable images are left out (calibration, parity samples)."""
    images = []
    for path in paths:
        try:
            images.append(load_image(path, resize_size, image_size, channels))
        except Exception:  # noqa: BLE001 - an unreadable image is just not used
            continue
    return images


@dataclass(frozen=True)
class ImageDraw:
    """Images drawn at random from a list into two disjoint parts, as uint8 [C, S, S] arrays.

    Attributes:
        first: the readable images of the first part.
        second: the readable images of the second part.
        first_picked: how many paths were drawn for the first part, readable or not.
    """

    first: list[np.ndarray]
    second: list[np.ndarray]
    first_picked: int


def draw_images(source: str | Path, first: int, second: int, resize_size: int, image_size: int, channels: int,
                seed: int = 0) -> ImageDraw:
    """Up to ``first`` images of the list ``source`` drawn at random (seeded), and up to ``second`` of the others.

    A list of fewer than ``first + second`` images is split 3:1 instead: a quarter of it (rounded
    down, at most ``second``) goes to the second part. Images are loaded as ``load_image`` does;
    unreadable ones are left out. (int8 calibration: calibrate on the first part, check on the second.)

    Raises:
        ToolkitError: ``source`` is not a readable image list (see ``read_image_list``).
    """
    paths = read_image_list(source)
    order = np.random.default_rng(seed).permutation(len(paths)).tolist()
    if len(paths) < first + second:
        first = len(paths) - len(paths) // 4
    picked = [paths[i] for i in order[:first]]
    return ImageDraw(load_readable(picked, resize_size, image_size, channels),
                     load_readable([paths[i] for i in order[first:first + second]], resize_size, image_size, channels),
                     len(picked))


def images_under(folder: Path) -> list[str]:
    """Image files under ``folder``, sorted, following folder links (``toolkit.data.walk``); skipped entries are reported."""
    files, skipped = find_files(folder, IMAGE_EXTENSIONS)
    report_skipped(folder, skipped)
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
