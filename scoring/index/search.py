"""The search behind ``toolkit score --index``: the ``top_k`` nearest indexed images of every query."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from scoring.csv_out import in_blocks, write_csv_atomic
from scoring.image_lists import EmbedPaths, embed_unique
from scoring.index import faiss_index
from scoring.index.job import read_index, read_meta
from scoring.index.store import EmbeddingStore
from scoring.score import TOP_K_COLUMNS, top_k_rows
from toolkit.console import warn
from toolkit.errors import ToolkitError


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
    folder = Path(folder)
    if top_k < 1:
        raise ToolkitError(f"--top-k {top_k}: must be 1 or more")
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

    lines = top_k_rows(query_paths, row_of, failed, scores, ids, gallery)
    written = write_csv_atomic(Path(output_csv), TOP_K_COLUMNS, in_blocks(lines))
    if k < top_k:
        warn(f"--top-k {top_k} clipped to the index's {len(gallery)} vectors")
    return IndexSearchResult(Path(output_csv), written, len(query_paths) - len(rows), len(query_paths), len(gallery), k,
                             failed)
