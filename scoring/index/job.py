"""``toolkit index build|add|info`` and the search behind ``toolkit score --index``.

An index folder holds an embedding store (``scoring.index.store``) and ``index.faiss`` +
``index.json`` built over it. Build and add embed only the images the store lacks (each once,
per-image errors kept in the shard), then (re)build or extend the faiss index; ids are the
store's row order.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scoring.csv_out import in_blocks, write_csv_atomic
from scoring.image_lists import EmbedPaths, embed_unique, read_image_list
from scoring.index import faiss_index
from scoring.index.faiss_index import IndexParams
from scoring.index.store import DEFAULT_SHARD_SIZE, EmbeddingStore, Shard, embed_into_shards
from scoring.score import TOP_K_COLUMNS, top_k_rows
from toolkit.console import info as say
from toolkit.console import warn
from toolkit.engine.run_folder import atomic_path, write_text_atomic
from toolkit.errors import ToolkitError

RECALL_K = 10
RECALL_QUERIES = 1000


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


def _read_meta(folder: Path) -> dict[str, Any]:
    path = Path(folder) / "index.json"
    if not path.is_file() or not (Path(folder) / "index.faiss").is_file():
        raise ToolkitError(f"{folder}: no faiss index (index.json, index.faiss); build one with toolkit index build")
    return json.loads(path.read_text())


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
    searched = faiss_index.to_device(index, device)
    recall = faiss_index.recall_at_k(searched, vectors, rows, recall_k)
    _write_index(index, folder / "index.faiss")
    recall_dict = {"k": recall.k, "queries": recall.queries, "recall": recall.recall, "held_out": held_out,
                   "queries_per_second": recall.queries / max(recall.seconds, 1e-9)}
    _write_meta(folder, {"kind": kind, "params": params.to_dict(), "vectors": int(index.ntotal),
                         "dim": int(vectors.shape[1]), "build_seconds": seconds, "index_bytes": size,
                         "recall": recall_dict, "faiss_version": faiss.__version__})
    tuned = {"ivf": f", nlist {params.nlist}, nprobe {params.nprobe}",
             "ivfpq": f", nlist {params.nlist}, nprobe {params.nprobe}, {params.pq_m} x {params.pq_bits}-bit codes",
             "hnsw": f", M {params.hnsw_m}, efSearch {params.ef_search}"}.get(kind, "")
    say(f"built {kind} index{tuned} over {index.ntotal} vectors of dim {vectors.shape[1]} in {seconds:.2f} s; "
        f"memory {_mib(size)} (flat would be {_mib(vectors.nbytes)}); recall@{recall.k} vs exact search "
        f"{recall.recall:.4f} on {recall.queries} {'held-out ' if held_out else ''}gallery vectors -> {folder / 'index.faiss'}")
    return summary(folder)


def build(folder: str | Path, gallery: Sequence[str], embed_paths: EmbedPaths, fingerprint: dict[str, Any], *,
          source: str, kind: str = "flat", nprobe: int | None = None, shard_size: int = DEFAULT_SHARD_SIZE,
          device: str = "cpu") -> IndexSummary:
    """``toolkit index build``: embeds ``gallery`` into shards (resuming a killed build), then indexes it.

    Raises:
        ToolkitError: a bad kind / nprobe / shard size, a store of another model or gallery in ``folder``.
    """
    folder = Path(folder)
    faiss_index.resolve_params(kind, 1, 1, nprobe)  # fail on a bad --kind before embedding anything
    store = EmbeddingStore(folder)
    store.create(fingerprint, shard_size, source)
    shards = store.shards()
    wanted = set(gallery)
    foreign = next((p for s in shards for p in s.paths if p not in wanted), None)
    if foreign is not None:
        raise ToolkitError(f"{folder}: holds images not in this gallery (e.g. {foreign}); "
                           f"use toolkit index add, or another --out")
    if shards:
        say(f"resuming: {len(shards)} finished shard(s) in {folder} hold {sum(len(s.paths) for s in shards)} images")
    pending = store.pending_shards(gallery)
    embed_into_shards(store, gallery, embed_paths, on_shard=_shard_line(sum(len(p) for _, p in pending)))
    return build_from_store(folder, kind, nprobe, device)


def add(folder: str | Path, images: Sequence[str], embed_paths: EmbedPaths) -> IndexSummary:
    """``toolkit index add``: embeds the images the store lacks into new shards and appends them to the index."""
    import faiss

    folder = Path(folder)
    meta = _read_meta(folder)
    store = EmbeddingStore(folder)
    pending = store.pending_shards(images)
    written = embed_into_shards(store, images, embed_paths, on_shard=_shard_line(sum(len(p) for _, p in pending)))
    index = faiss.read_index(str(folder / "index.faiss"))
    new = store.vectors(written)
    if len(new):
        index.add(np.ascontiguousarray(new))
        _write_index(index, folder / "index.faiss")
    meta.update(vectors=int(index.ntotal), index_bytes=faiss_index.index_bytes(index))
    _write_meta(folder, meta)
    say(f"added {len(new)} vectors ({len(images) - sum(len(p) for _, p in pending)} already in the store) -> "
        f"{index.ntotal} in {folder / 'index.faiss'}")
    return summary(folder)


def summary(folder: str | Path) -> IndexSummary:
    """What ``folder`` holds (``toolkit index info``)."""
    folder = Path(folder)
    meta = _read_meta(folder)
    shards = EmbeddingStore(folder).shards()
    return IndexSummary(folder, meta["kind"], meta["vectors"], sum(len(s.errors) for s in shards), len(shards),
                        meta["dim"], meta["index_bytes"], meta["params"], meta["build_seconds"], meta.get("recall"))


def print_info(folder: str | Path) -> IndexSummary:
    """Prints ``summary(folder)`` and the store's model."""
    s = summary(folder)
    manifest = EmbeddingStore(folder).manifest()
    recall = s.recall
    say(f"{s.folder}: {s.kind} index, {s.vectors} vectors of dim {s.dim} in {s.shards} shard(s), "
        f"{s.failed_images} image(s) failed; memory {_mib(s.index_bytes)}; built in {s.build_seconds:.2f} s")
    say(f"params {json.dumps(s.params)}")
    if recall:
        held = "held-out " if recall.get("held_out") else ""
        say(f"recall@{recall['k']} vs exact search {recall['recall']:.4f} on {recall['queries']} {held}gallery vectors")
    say(f"model {manifest['source_model']} fingerprint {manifest['fingerprint'][:16]} ({manifest['model'][:22]}...), "
        f"preprocessing {json.dumps(manifest['preprocessing'])}")
    return s


@dataclass(frozen=True)
class IndexSearchResult:
    """What ``search`` wrote (the columns of ``score_top_k``'s CSV)."""

    output_csv: Path
    rows_written: int
    failed_rows: int
    queries: int
    gallery_size: int
    top_k: int
    image_errors: dict[str, str]


def search(folder: str | Path, query_paths: Sequence[str], output_csv: str | Path, embed_paths: EmbedPaths,
           fingerprint: dict[str, Any], *, source: str, top_k: int, device: str = "cpu") -> IndexSearchResult:
    """Writes ``query,rank,gallery,score,error`` rows: the ``top_k`` nearest indexed images of every query.

    Raises:
        ToolkitError: no index in ``folder``, a model whose fingerprint differs from the store's, ``top_k < 1``.
    """
    import faiss

    folder = Path(folder)
    if top_k < 1:
        raise ToolkitError(f"--top-k {top_k}: must be 1 or more")
    meta = _read_meta(folder)
    store = EmbeddingStore(folder)
    store.check_fingerprint(fingerprint, source)
    gallery = store.ok_paths()
    index = faiss.read_index(str(folder / "index.faiss"))
    if index.ntotal != len(gallery):
        raise ToolkitError(f"{folder}: index.faiss holds {index.ntotal} vectors but the store {len(gallery)}; "
                           f"rebuild it with toolkit index build")
    params = IndexParams(**meta["params"])
    faiss_index.set_search_params(index, params)
    index = faiss_index.to_device(index, device)
    embeddings, row_of, failed = embed_unique(query_paths, embed_paths)
    rows = [row_of[p] for p in query_paths if p in row_of]
    k = min(top_k, len(gallery))
    scores, ids = np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    if rows:
        scores, ids = index.search(np.ascontiguousarray(embeddings[rows], dtype=np.float32), k)

    lines = top_k_rows(query_paths, row_of, failed, scores, ids, gallery)
    written = write_csv_atomic(Path(output_csv), TOP_K_COLUMNS, in_blocks(lines))
    if k < top_k:
        warn(f"--top-k {top_k} clipped to the index's {len(gallery)} vectors")
    return IndexSearchResult(Path(output_csv), written, len(query_paths) - len(rows), len(query_paths), len(gallery), k,
                             failed)


def read_gallery(path: str | Path) -> list[str]:
    """The gallery's image paths (``read_image_list``), each once."""
    return list(dict.fromkeys(read_image_list(path)))
