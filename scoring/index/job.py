"""``toolkit index build|add|info`` (the search behind ``toolkit score --index`` is ``scoring.index.search``).

An index folder holds an embedding store (``scoring.index.store``) and ``index.faiss`` +
``index.json`` built over it. Build and add embed only the images the store lacks (each once,
per-image errors kept in the shard), then (re)build or extend the faiss index; ids are the
store's row order. Both hold the run folders' lock (``RunFolder.lock``) while they write, and
every file they read is checked (``scoring.index.store_files``): a damaged one is a one-line error
naming it and its repair.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scoring.image_lists import EmbedPaths, canonical
from scoring.index import faiss_index
from scoring.index.faiss_index import IndexParams
from scoring.index.store import DEFAULT_SHARD_SIZE, EmbeddingStore, Shard, embed_into_shards
from scoring.index.store_files import read_json_object, require
from toolkit.console import info as say
from toolkit.data.image_files import read_image_list
from toolkit.engine.run_folder import RunFolder
from toolkit.io import atomic_path, write_text_atomic
from toolkit.errors import ToolkitError

RECALL_K = 10
RECALL_QUERIES = 1000
REBUILD = ("rebuild it from the store: run toolkit index build again with the same model, --out and whole gallery "
           "(images added later included); finished shards are not embedded again")


@dataclass(frozen=True)
class IndexSummary:
    """What an index folder holds, and what its last build measured."""

    folder: Path
    kind: str
    vectors: int
    failed_images: int
    shards: int
    dim: int
    index_bytes: int
    params: dict[str, Any]
    build_seconds: float
    recall: dict[str, Any] | None


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"


def _write_index(index: Any, path: Path) -> None:
    import faiss

    with atomic_path(path) as tmp:
        faiss.write_index(index, str(tmp))


def _write_meta(folder: Path, meta: dict[str, Any]) -> None:
    write_text_atomic(folder / "index.json", json.dumps(meta, indent=1))


def read_meta(folder: Path) -> dict[str, Any]:
    """``index.json``, checked: every key a reader uses is there with its type.

    Raises:
        ToolkitError: no index in ``folder``, or a damaged ``index.json`` (naming it and the repair).
    """
    path = Path(folder) / "index.json"
    if not Path(folder).is_dir():
        raise ToolkitError(f"{folder}: not an index folder; build one with toolkit index build MODEL GALLERY --out {folder}")
    if not path.is_file() or not (Path(folder) / "index.faiss").is_file():
        raise ToolkitError(f"{folder}: no faiss index (index.json, index.faiss); build one with toolkit index build")
    meta = read_json_object(path, REBUILD)
    if require(path, meta, "kind", str, REBUILD) not in faiss_index.KINDS:
        raise ToolkitError(f"{path}: damaged, unknown kind {meta['kind']!r}; {REBUILD}")
    for key in ("vectors", "dim", "index_bytes"):
        require(path, meta, key, int, REBUILD)
    require(path, meta, "build_seconds", (int, float), REBUILD)
    require(path, meta, "recall", (dict, type(None)), REBUILD)
    try:
        IndexParams(**require(path, meta, "params", dict, REBUILD))
    except TypeError:
        raise ToolkitError(f"{path}: damaged, unknown `params` {sorted(meta['params'])}; {REBUILD}") from None
    return meta


def read_index(folder: Path, meta: dict[str, Any], vectors: int) -> Any:
    """``index.faiss``, checked against ``index.json`` and the store's ``vectors``.

    Raises:
        ToolkitError: the file is not a faiss index, or holds another number or size of vectors.
    """
    import faiss

    path = folder / "index.faiss"
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as exc:  # faiss reports a damaged file as a RuntimeError with its C++ trace
        reason = str(exc).strip().splitlines()[-1][:120] if str(exc).strip() else "unreadable"
        raise ToolkitError(f"{path}: damaged, not a faiss index ({reason}); {REBUILD}") from None
    if index.d != meta["dim"] or index.ntotal != vectors:
        raise ToolkitError(f"{path}: holds {index.ntotal} vectors of dim {index.d} but the store {vectors} of dim "
                           f"{meta['dim']}; {REBUILD}")
    faiss_index.set_search_params(index, IndexParams(**meta["params"]))
    return index


_HELD: set[str] = set()  # index folders whose lock this process holds (``writing`` nests)


@contextlib.contextmanager
def writing(folder: Path) -> Iterator[None]:
    """The run folders' OS lock (``RunFolder.lock``) held while a build or add writes ``folder``.

    A second ``index build``/``add`` on the same folder is then a one-line error naming the first's
    pid, instead of two writers each extending ``index.faiss`` from the same old copy. The CLI takes it
    before opening the model (so the refusal costs nothing); ``build`` and ``add`` take it again, a no-op.
    """
    folder = Path(folder)
    key = str(folder.resolve())
    if key in _HELD:
        yield
        return
    if folder.exists() and not folder.is_dir():
        raise ToolkitError(f"--out {folder}: is a file; give a folder for the index (a new one, or an index folder)")
    with RunFolder(folder).writing(resuming=True):
        _HELD.add(key)
        try:
            yield
        finally:
            _HELD.discard(key)


def _shard_line(total: int) -> Any:
    done = {"n": 0}

    def on_shard(shard: Shard) -> None:
        done["n"] += len(shard.paths)
        failed = f", {len(shard.errors)} failed" if shard.errors else ""
        say(f"shard {shard.number}: {len(shard.ok)} vectors{failed} ({done['n']} of {total} images this run)")

    return on_shard


def build_from_store(folder: Path, kind: str, nprobe: int | None = None, device: str = "cpu",
                     recall_k: int = RECALL_K) -> IndexSummary:
    """Builds ``index.faiss`` over every vector of the store in ``folder``; prints time, memory, recall@k."""
    import faiss

    store = EmbeddingStore(folder)
    vectors = store.vectors()
    if len(vectors) == 0:
        raise ToolkitError(f"{folder}: no image of the gallery could be embedded; nothing to index")
    params = faiss_index.resolve_params(kind, len(vectors), vectors.shape[1], nprobe)
    rows = faiss_index.held_out_rows(len(vectors), RECALL_QUERIES)
    held_out = len(vectors) - len(rows) >= max(params.nlist, 1) * 39  # else too few points to train without them
    train = np.delete(vectors, rows, axis=0) if held_out else vectors
    start = time.perf_counter()
    index = faiss_index.build_index(vectors, params, train_sample=train)
    seconds = time.perf_counter() - start
    size = faiss_index.index_bytes(index)
    recall = _measure_recall(faiss_index.to_device(index, device), vectors, rows, recall_k, held_out)
    _write_index(index, folder / "index.faiss")
    _write_meta(folder, {"kind": kind, "params": params.to_dict(), "vectors": int(index.ntotal),
                         "dim": int(vectors.shape[1]), "build_seconds": seconds, "index_bytes": size,
                         "recall": recall, "faiss_version": faiss.__version__})
    tuned = {"ivf": f", nlist {params.nlist}, nprobe {params.nprobe}",
             "ivfpq": f", nlist {params.nlist}, nprobe {params.nprobe}, {params.pq_m} x {params.pq_bits}-bit codes",
             "hnsw": f", M {params.hnsw_m}, efSearch {params.ef_search}"}.get(kind, "")
    say(f"built {kind} index{tuned} over {index.ntotal} vectors of dim {vectors.shape[1]} in {seconds:.2f} s; "
        f"memory {_mib(size)} (flat would be {_mib(vectors.nbytes)}); {_recall_text(recall)} -> {folder / 'index.faiss'}")
    return summary(folder)


def _measure_recall(index: Any, vectors: np.ndarray, rows: np.ndarray, k: int, held_out: bool,
                    after_add: bool = False) -> dict[str, Any] | None:
    """``faiss_index.recall_at_k`` as ``index.json`` records it (None for an index of one vector)."""
    recall = faiss_index.recall_at_k(index, vectors, rows, k)
    if recall.k < 1:
        return None
    return {"k": recall.k, "queries": recall.queries, "recall": recall.recall, "held_out": held_out,
            "self_excluded": True, "vectors": len(vectors), "after_add": after_add,
            "queries_per_second": recall.queries / max(recall.seconds, 1e-9)}


def _recall_text(recall: dict[str, Any] | None) -> str:
    """The recall figure as a phrase that says what it was measured on (and when, for older folders)."""
    if not recall:
        return "recall not measured (one vector)"
    held = "held-out " if recall.get("held_out") else ""
    text = (f"recall@{recall['k']} vs exact search {recall['recall']:.4f} on {recall['queries']} {held}gallery "
            f"vectors, each query's own entry excluded")
    if not recall.get("self_excluded"):  # written by a toolkit before issue 18: each query counted itself
        text = (f"recall@{recall['k']} vs exact search {recall['recall']:.4f} on {recall['queries']} {held}gallery "
                "vectors (measured counting each query's own entry, which inflates it; rebuild to re-measure)")
    if recall.get("after_add"):
        text += f" (re-measured after index add, over {recall['vectors']} vectors)"
    return text


def build(folder: str | Path, gallery: Sequence[str], embed_paths: EmbedPaths, fingerprint: dict[str, Any], *,
          source: str, kind: str = "flat", nprobe: int | None = None, shard_size: int = DEFAULT_SHARD_SIZE,
          device: str = "cpu") -> IndexSummary:
    """``toolkit index build``: embeds ``gallery`` into shards (resuming a killed build), then indexes it.

    Raises:
        ToolkitError: a bad kind / nprobe / shard size, a store of another model or gallery in ``folder``.
    """
    folder = Path(folder)
    faiss_index.resolve_params(kind, 1, 1, nprobe)  # fail on a bad --kind before embedding anything
    with writing(folder):
        store = EmbeddingStore(folder)
        store.create(fingerprint, shard_size, source)
        shards = store.shards()
        wanted = set(gallery)
        foreign = next((p for s in shards for p in s.paths if p not in wanted), None)
        if foreign is not None:
            raise ToolkitError(f"{folder}: holds images not in this gallery (e.g. {foreign}); "
                               f"use toolkit index add, or another --out")
        if shards:
            store.check_shards(shards)
            say(f"resuming: {len(shards)} finished shard(s) in {folder} hold {sum(len(s.paths) for s in shards)} images")
        pending = store.pending_shards(gallery)
        embed_into_shards(store, gallery, embed_paths, on_shard=_shard_line(sum(len(p) for _, p in pending)))
        return build_from_store(folder, kind, nprobe, device)


def add(folder: str | Path, images: Sequence[str], embed_paths: EmbedPaths) -> IndexSummary:
    """``toolkit index add``: embeds the images the store lacks into new shards and appends them to the index."""
    folder = Path(folder)
    meta = read_meta(folder)
    with writing(folder):
        meta = read_meta(folder)  # again: another add may have finished while this one waited to start
        store = EmbeddingStore(folder)
        store.check_shards()  # a missing or damaged shard is found before anything is added
        index = read_index(folder, meta, len(store.ok_paths()))
        pending = store.pending_shards(images)
        written = embed_into_shards(store, images, embed_paths, on_shard=_shard_line(sum(len(p) for _, p in pending)))
        new = store.vectors(written)
        if len(new):
            index.add(np.ascontiguousarray(new))
            vectors = store.vectors()
            rows = faiss_index.held_out_rows(len(vectors), RECALL_QUERIES)
            meta["recall"] = _measure_recall(index, vectors, rows, RECALL_K, held_out=False, after_add=True)
            _write_index(index, folder / "index.faiss")
        meta.update(vectors=int(index.ntotal), index_bytes=faiss_index.index_bytes(index))
        _write_meta(folder, meta)
    say(f"added {len(new)} vectors ({len(images) - sum(len(p) for _, p in pending)} already in the store) -> "
        f"{index.ntotal} in {folder / 'index.faiss'}" + (f"; {_recall_text(meta['recall'])}" if len(new) else ""))
    return summary(folder)


def summary(folder: str | Path) -> IndexSummary:
    """What ``folder`` holds (``toolkit index info``)."""
    folder = Path(folder)
    meta = read_meta(folder)
    shards = EmbeddingStore(folder).shards()
    return IndexSummary(folder, meta["kind"], meta["vectors"], sum(len(s.errors) for s in shards), len(shards),
                        meta["dim"], meta["index_bytes"], meta["params"], meta["build_seconds"], meta.get("recall"))


def print_info(folder: str | Path) -> IndexSummary:
    """Prints ``summary(folder)`` and the store's model."""
    s = summary(folder)
    manifest = EmbeddingStore(folder).manifest()
    say(f"{s.folder}: {s.kind} index, {s.vectors} vectors of dim {s.dim} in {s.shards} shard(s), "
        f"{s.failed_images} image(s) failed; memory {_mib(s.index_bytes)}; built in {s.build_seconds:.2f} s")
    say(f"params {json.dumps(s.params)}")
    say(_recall_text(s.recall))
    say(f"model {manifest['source_model']} fingerprint {manifest['fingerprint'][:16]} ({manifest['model'][:22]}...), "
        f"preprocessing {json.dumps(manifest['preprocessing'])}")
    return s


def read_gallery(path: str | Path) -> list[str]:
    """The gallery's image paths (``read_image_list``), resolved (``canonical``), each once.

    Resolving before de-duplicating makes ``a.png`` and ``/data/a.png`` one image, and the store's
    recorded paths open from any working folder (the report's thumbnails, a search run elsewhere).
    """
    return list(dict.fromkeys(canonical(p) for p in read_image_list(path)))
