"""The search behind ``toolkit score --index``: the ``top_k`` nearest indexed images of every query."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from scoring.image_lists import EmbedPaths, embed_unique
from scoring.index import faiss_index
from scoring.index.job import read_index, read_meta
from scoring.index.store import EmbeddingStore
from scoring.top_k import TopKResult, write_top_k
from toolkit.console import warn


def search(folder: str | Path, query_paths: Sequence[str], output_csv: str | Path, embed_paths: EmbedPaths,
           fingerprint: dict[str, Any], *, source: str, top_k: int, device: str = "cpu") -> TopKResult:
    """Writes the ``top_k`` (>= 1) nearest indexed images of every query (``scoring.top_k.write_top_k``'s CSV).

    Raises:
        ToolkitError: no index in ``folder``, a model whose ``fingerprint`` differs from the store's.
    """
    folder = Path(folder)
    meta = read_meta(folder)
    store = EmbeddingStore(folder)
    store.check_fingerprint(fingerprint, source)
    gallery = store.ok_paths()
    index = faiss_index.to_device(read_index(folder, meta, len(gallery)), device)
    embeddings, row_of, failed = embed_unique(query_paths, embed_paths)
    rows = [row_of[p] for p in query_paths if p in row_of]
    k = min(top_k, len(gallery))
    scores, ids = np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    if rows:
        scores, ids = index.search(np.ascontiguousarray(embeddings[rows], dtype=np.float32), k)
    written = write_top_k(Path(output_csv), query_paths, row_of, failed, scores, ids, gallery)
    if k < top_k:
        warn(f"--top-k {top_k} clipped to the index's {len(gallery)} vectors")
    return TopKResult(Path(output_csv), written, len(query_paths) - len(rows), len(query_paths), len(gallery),
                      failed_gallery=0, image_errors=failed, top_k=k, top_k_requested=top_k)
