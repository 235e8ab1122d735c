"""Top-k matches per query, the result of gallery mode (``score_top_k``) and of index mode (``scoring.index.search``).

Both write the same CSV through ``write_top_k``: rows ``query,rank,gallery,score,error``, queries in
input order, ranks 1..K best first; a query whose image could not be embedded gets one row with only
``query`` and ``error``. Both return a ``TopKResult``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from scoring.csv_out import in_blocks, one_line, write_csv_atomic
from scoring.image_lists import EmbedPaths, distinct_files, embed_unique, first_failure
from toolkit.errors import ToolkitError
from toolkit.metrics.similarity import TOPK_CHUNK_BYTES, top_k_similar

TOP_K_COLUMNS = ["query", "rank", "gallery", "score", "error"]


@dataclass(frozen=True)
class TopKResult:
    """What ``score_top_k`` or an index search wrote.

    Attributes:
        output_csv: the CSV written.
        rows_written: data rows: ``top_k`` per query that embedded, one per query that did not.
        failed_rows: query rows with an error (one per query image that could not be embedded).
        queries: query entries.
        gallery_size: gallery entries (or indexed vectors) that were ranked.
        failed_gallery: gallery entries left out because their image could not be embedded.
        image_errors: {path: reason} for every image (query or gallery) that failed.
        top_k: neighbours written per query.
        top_k_requested: what was asked; larger than ``top_k`` when clipped to the gallery.
        duplicate_gallery: gallery entries naming a file listed before (ranked once, as the index does).
    """

    output_csv: Path
    rows_written: int
    failed_rows: int
    queries: int
    gallery_size: int
    failed_gallery: int
    image_errors: dict[str, str]
    top_k: int
    top_k_requested: int
    duplicate_gallery: int = 0

    @property
    def k_clipped(self) -> bool:
        """True when the gallery had fewer images than the K asked for."""
        return self.top_k < self.top_k_requested


def write_top_k(output_csv: Path, query_paths: Sequence[str], row_of: dict[str, int], failed: dict[str, str],
                scores: np.ndarray, ids: np.ndarray, gallery: Sequence[str]) -> int:
    """Writes the ``query,rank,gallery,score,error`` CSV of a top-k search, atomically.

    ``scores``/``ids`` hold one row per query in ``row_of`` (the queries that embedded), in input
    order; an id of -1 (an approximate index that found fewer than k) is skipped.

    Returns:
        The number of data rows written.
    """

    def rows() -> Iterable[list[object]]:
        done = 0
        for query in query_paths:
            if query not in row_of:
                yield [query, "", "", "", one_line(failed[query])]
                continue
            rank = 0
            for s, g in zip(scores[done].tolist(), ids[done].tolist()):
                if g >= 0:
                    rank += 1
                    yield [query, rank, gallery[g], f"{s:.6f}", ""]
            done += 1

    return write_csv_atomic(Path(output_csv), TOP_K_COLUMNS, in_blocks(rows()))


def score_top_k(
    query_paths: Sequence[str],
    gallery_paths: Sequence[str],
    output_csv: str | Path,
    embed_paths: EmbedPaths,
    *,
    top_k: int,
    chunk_bytes: int = TOPK_CHUNK_BYTES,
    device: str | torch.device = "cpu",
) -> TopKResult:
    """Writes the ``top_k`` (>= 1) most similar gallery images of every query, best first.

    A gallery image that fails is left out of the ranking and counted in ``failed_gallery``.
    Images in both lists are embedded once (a query found in the gallery ranks itself first). A
    gallery entry naming a file listed before (``a.png`` and ``./a.png``) is ranked once, as in an
    index, and counted in ``duplicate_gallery``.

    Raises:
        ToolkitError: an empty list, or no gallery image could be embedded.
    """
    if not query_paths or not gallery_paths:
        raise ToolkitError(
            f"need at least one query and one gallery image, got {len(query_paths)} and {len(gallery_paths)}"
        )
    listed = len(gallery_paths)
    gallery_paths = distinct_files(gallery_paths)
    embeddings, row_of, failed = embed_unique([*query_paths, *gallery_paths], embed_paths)
    gallery_rows = [row_of[p] for p in gallery_paths if p in row_of]
    if not gallery_rows:
        raise ToolkitError(f"none of the {len(gallery_paths)} gallery images could be read; "
                           f"first: {first_failure(gallery_paths, failed)}")
    gallery_ok = [p for p in gallery_paths if p in row_of]
    query_rows = [row_of[p] for p in query_paths if p in row_of]
    scores = np.zeros((0, 1), dtype=np.float32)
    indices = np.zeros((0, 1), dtype=np.int64)
    if query_rows:
        scores, indices = top_k_similar(
            embeddings[query_rows], embeddings[gallery_rows], top_k, chunk_bytes=chunk_bytes, device=device
        )
    written = write_top_k(Path(output_csv), query_paths, row_of, failed, scores, indices, gallery_ok)
    return TopKResult(
        output_csv=Path(output_csv),
        rows_written=written,
        failed_rows=len(query_paths) - len(query_rows),
        queries=len(query_paths),
        gallery_size=len(gallery_rows),
        failed_gallery=len(gallery_paths) - len(gallery_rows),
        image_errors=failed,
        top_k=min(top_k, len(gallery_rows)),
        top_k_requested=top_k,
        duplicate_gallery=listed - len(gallery_paths),
    )
