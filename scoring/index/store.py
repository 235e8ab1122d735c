"""A sharded embedding store: float32 ``.npy`` shards + their paths + the model's fingerprint.

Layout of a store folder::

    store.json                  fingerprint, model, preprocessing, dim, shard size
    shards/shard-00000.npy      [n, D] float32 l2-normalised embeddings of the images that embedded
    shards/shard-00000.json     {"paths": attempted, "ok": embedded (row order), "errors": {path: reason}}

A shard is finished when its ``.json`` exists: both files are written to a temporary name and
renamed, the ``.json`` last. A build that is killed therefore leaves only finished shards, and
the same command continues with the first path no finished shard holds; since shards are cut
from the same ordered list of distinct paths, the result equals an uninterrupted build.

``embed_into_shards`` is the one step that runs a model: it takes any ``embed_paths`` callable
(``scoring.image_lists.EmbedPaths``; the local DataLoader embedder of ``scoring.images``, or a
distributed engine) and hands it one shard of paths at a time. ``pending_shards`` and
``write_shard`` are exposed separately so that an engine that embeds shards elsewhere (e.g.
Ray workers) can write them itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scoring.image_lists import EmbedPaths
from scoring.index.store_files import load_vectors, npy_shape, read_json_object, require, string_list, string_map
from toolkit.io import atomic_path
from toolkit.errors import ToolkitError
from toolkit.metrics.similarity import l2_normalise

FORMAT = "toolkit-embedding-store"
DEFAULT_SHARD_SIZE = 50_000
SHARD_NAME = re.compile(r"^shard-(\d{5,})\.json$")
NEW_STORE = "build the index again into a new folder (toolkit index build MODEL GALLERY --out NEW_FOLDER)"


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """``write(tmp)`` then rename over ``path`` (``toolkit.io.atomic_path``)."""
    with atomic_path(path) as tmp:
        write(tmp)


def _write_json(path: Path, data: Any) -> None:
    _write_atomic(path, lambda tmp: tmp.write_text(json.dumps(data, indent=1)))


def _write_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a handle, so numpy does not append another .npy
            np.save(f, array)

    _write_atomic(path, write)


@dataclass(frozen=True)
class Shard:
    """One finished shard: its number, the paths it attempted, those that embedded, the errors."""

    number: int
    paths: list[str]
    ok: list[str]
    errors: dict[str, str]


class EmbeddingStore:
    """The shards in ``folder``; ``store.json`` says which model embedded them."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.shard_dir = self.folder / "shards"

    @property
    def manifest_path(self) -> Path:
        return self.folder / "store.json"

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def manifest(self) -> dict[str, Any]:
        """The ``store.json`` content.

        Raises:
            ToolkitError: no store in the folder, or not a toolkit store.
        """
        if not self.exists():
            raise ToolkitError(f"{self.folder}: no embedding store (no store.json); build one with toolkit index build")
        path = self.manifest_path
        data = read_json_object(path, NEW_STORE)
        if data.get("format") != FORMAT:
            raise ToolkitError(f"{path}: not a toolkit embedding store")
        for key in ("fingerprint", "model", "source_model"):
            require(path, data, key, str, NEW_STORE)
        require(path, data, "preprocessing", dict, NEW_STORE)
        for key in ("dim", "shard_size"):
            if require(path, data, key, int, NEW_STORE) < 1:
                raise ToolkitError(f"{path}: damaged, `{key}` is {data[key]}, not 1 or more; {NEW_STORE}")
        return data

    def create(self, fingerprint: dict[str, Any], shard_size: int, source: str) -> None:
        """Writes ``store.json`` for a new store, or checks that an existing one is the same model's.

        Raises:
            ToolkitError: the folder holds a store of another model (fingerprint) or preprocessing.
        """
        if self.exists():
            self.check_fingerprint(fingerprint, source)
            return
        if shard_size < 1:
            raise ToolkitError(f"--shard-size {shard_size}: must be 1 or more")
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        _write_json(self.manifest_path, {"format": FORMAT, "version": 1, **fingerprint,
                                         "dim": fingerprint["preprocessing"]["embedding_dim"],
                                         "shard_size": shard_size, "source_model": source})

    def check_fingerprint(self, fingerprint: dict[str, Any], source: str) -> None:
        """Raises ``ToolkitError`` unless ``fingerprint`` is the store's (same model, same preprocessing)."""
        stored = self.manifest()
        if stored["fingerprint"] != fingerprint["fingerprint"]:
            what = "preprocessing" if stored["model"] == fingerprint["model"] else "model"
            raise ToolkitError(
                f"{source}: its fingerprint {fingerprint['fingerprint'][:12]} differs from the index's "
                f"{stored['fingerprint'][:12]} in {self.folder} (another {what} than {stored['source_model']} that "
                f"embedded the gallery); search it with that model or rebuild the index")

    def shard_files(self, number: int) -> tuple[Path, Path]:
        """The ``.json`` and ``.npy`` of shard ``number``."""
        stem = self.shard_dir / f"shard-{number:05d}"
        return stem.with_suffix(".json"), stem.with_suffix(".npy")

    def repair(self, number: int) -> str:
        """How to repair damaged shard ``number``: remove it and embed its images again."""
        meta, npy = self.shard_files(number)
        return (f"remove {meta} and {npy}, then run the toolkit index build (same gallery) or toolkit index add "
                f"(same images) that wrote it again: its images are embedded again")

    def shards(self) -> list[Shard]:
        """The finished shards, in order.

        Raises:
            ToolkitError: a shard's ``.json`` is damaged (it names the file and the repair).
        """
        found: list[Shard] = []
        seen: set[str] = set()
        if not self.shard_dir.is_dir():
            return found
        for meta in sorted(self.shard_dir.iterdir()):
            match = SHARD_NAME.match(meta.name)
            if not match:
                continue
            number = int(match.group(1))
            repair = self.repair(number)
            data = read_json_object(meta, repair)
            paths, ok = string_list(meta, data, "paths", repair), string_list(meta, data, "ok", repair)
            errors = string_map(meta, data, "errors", repair)
            if not set(ok) <= set(paths) or len(set(ok)) != len(ok):
                raise ToolkitError(f"{meta}: damaged, `ok` lists paths that `paths` does not, or twice; {repair}")
            if seen.intersection(paths) or len(set(paths)) != len(paths):
                raise ToolkitError(f"{meta}: damaged, lists images that another shard (or itself) already holds; {repair}")
            seen.update(paths)
            found.append(Shard(number, paths, ok, errors))
        return sorted(found, key=lambda s: s.number)

    def check_shards(self, shards: Iterable[Shard] | None = None) -> None:
        """Checks each finished shard's ``.npy`` from its header (shape, dtype, size) without reading the vectors.

        Raises:
            ToolkitError: a shard's vectors are missing, truncated, of another type or shape than its ``.json`` says.
        """
        dim = int(self.manifest()["dim"])
        for s in self.shards() if shards is None else shards:
            _, npy = self.shard_files(s.number)
            shape = npy_shape(npy, self.repair(s.number))
            if shape != (len(s.ok), dim):
                raise ToolkitError(f"{npy}: damaged, holds an array of shape {shape} where its shard lists "
                                   f"{len(s.ok)} embedded image(s) of dim {dim}; {self.repair(s.number)}")

    def vectors(self, shards: Iterable[Shard] | None = None) -> np.ndarray:
        """[n, D] float32 of ``shards`` (default all), in shard order, each checked (``store_files.load_vectors``)."""
        chosen = list(self.shards() if shards is None else shards)
        dim = int(self.manifest()["dim"])
        arrays = [load_vectors(self.shard_files(s.number)[1], len(s.ok), dim, self.repair(s.number)) for s in chosen]
        return np.concatenate(arrays) if arrays else np.zeros((0, dim), dtype=np.float32)

    def ok_paths(self) -> list[str]:
        """The embedded paths, in the row order of ``vectors()`` (= the faiss ids)."""
        return [p for s in self.shards() for p in s.ok]

    def pending_shards(self, paths: Sequence[str]) -> list[tuple[int, list[str]]]:
        """(shard number, paths) still to embed: distinct ``paths`` no finished shard holds, cut in shard-size runs."""
        shards = self.shards()
        done = {p for s in shards for p in s.paths}
        todo = [p for p in dict.fromkeys(paths) if p not in done]
        size = int(self.manifest()["shard_size"])
        first = shards[-1].number + 1 if shards else 0
        return [(first + i, todo[start:start + size]) for i, start in enumerate(range(0, len(todo), size))]

    def write_shard(self, number: int, paths: Sequence[str], embeddings: np.ndarray, ok: Sequence[str],
                    errors: dict[str, str]) -> Shard:
        """Writes one finished shard: the vectors (l2-normalised here) first, then its ``.json``."""
        vectors = l2_normalise(np.asarray(embeddings, dtype=np.float32).reshape(len(ok), -1))
        self.shard_dir.mkdir(parents=True, exist_ok=True)
        _write_npy(self.shard_dir / f"shard-{number:05d}.npy", vectors)
        shard = Shard(number, list(paths), list(ok), {p: errors[p] for p in paths if p in errors})
        _write_json(self.shard_dir / f"shard-{number:05d}.json",
                    {"paths": shard.paths, "ok": shard.ok, "errors": shard.errors})
        return shard


def embed_into_shards(store: EmbeddingStore, paths: Sequence[str], embed_paths: EmbedPaths,
                      on_shard: Callable[[Shard], None] | None = None) -> list[Shard]:
    """Embeds the ``paths`` the store does not hold yet, one shard at a time, each image once.

    Args:
        store: a created store (``EmbeddingStore.create``).
        paths: images in gallery order; duplicates and paths already in the store are skipped.
        embed_paths: ``(paths) -> (embeddings [len(ok), D], ok, {path: reason})``; any engine.
        on_shard: called after each finished shard (progress lines).

    Returns:
        The shards written by this call.
    """
    written = []
    for number, chunk in store.pending_shards(paths):
        embeddings, ok, errors = embed_paths(chunk)
        asked, embedded = set(chunk), set(ok)
        unknown = [p for p in ok if p not in asked]
        if unknown:
            raise ValueError(f"embed_paths returned paths it was not given, e.g. {unknown[0]}")
        failed = {p: errors.get(p, "not embedded (no reason given)") for p in chunk if p not in embedded}
        shard = store.write_shard(number, chunk, embeddings, ok, failed)
        written.append(shard)
        if on_shard is not None:
            on_shard(shard)
    return written
