"""`toolkit score`: similarity scoring of image files on l2-normalised embeddings, CSV in and out.

Three modes, each one call that embeds every unique image once and writes one CSV:

* pairs (``score_pairs``, in ``scoring.pairs``): ``image_a,image_b[,label]`` rows -> the
  same rows plus ``score,same,error``; with labels, ROC AUC and EER;
* query vs gallery (``score_top_k``): rows ``query,rank,gallery,score,error``, the K nearest
  gallery images of every query;
* few-shot support set (``score_support``): rows ``query,predicted_class,score,error`` by the
  nearest class prototype (mean support embedding, renormalised), as in Prototypical Networks
  (Snell et al., 2017, eq. 1) with cosine instead of squared Euclidean distance.

No mode decodes an image: the caller passes ``embed_paths(paths) -> (embeddings
[len(ok_paths), D], ok_paths, errors {path: one-line reason})``, so the scoring is testable
with fake embeddings. A missing or unreadable image never loses other rows: its rows get an
empty score and a non-empty ``error``; every result counts those rows in ``failed_rows``.

This module also re-exports the pieces it is built from (``toolkit.metrics.similarity``,
``scoring.image_lists``, ``scoring.pairs``), so ``from scoring import score`` reaches
the whole scoring API.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from scoring.csv_out import in_blocks, one_line, write_csv_atomic
from scoring.image_lists import EmbedPaths, SupportSet, distinct_files, embed_unique, read_image_list, read_support_folder
from scoring.pairs import OUTPUT_COLUMNS, PairScoreResult, score_pairs
from toolkit.metrics.similarity import (
    PAIR_CHUNK,
    PAIR_CHUNK_BYTES,
    TOPK_CHUNK_BYTES,
    UNKNOWN,
    classify_by_prototype,
    l2_normalise,
    pair_scores,
    similarity_chunk_rows,
    top_k_similar,
)
from toolkit.errors import ToolkitError

__all__ = [
    "EmbedPaths", "OUTPUT_COLUMNS", "PAIR_CHUNK", "PAIR_CHUNK_BYTES", "TOPK_CHUNK_BYTES", "UNKNOWN",
    "PairScoreResult", "SupportScoreResult", "SupportSet", "TopKResult", "classify_by_prototype", "l2_normalise",
    "pair_scores", "read_image_list", "read_support_folder", "score_pairs", "score_support", "score_top_k",
    "similarity_chunk_rows", "top_k_similar",
]


def _write_csv_atomic(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> int:
    """``write_csv_atomic`` for a row iterator (grouped into blocks)."""
    return write_csv_atomic(path, header, in_blocks(rows))


def _first_failure(paths: Sequence[str], failed: dict[str, str]) -> str:
    first = next(p for p in paths if p in failed)
    return f"{first}: {one_line(failed[first])}"


# ----------------------------------------------------------------------------- query vs gallery


@dataclass(frozen=True)
class TopKResult:
    """What ``score_top_k`` wrote.

    Attributes:
        output_csv: the CSV written.
        rows_written: data rows: ``top_k`` per query that embedded, one per query that did not.
        failed_rows: query rows with an error (one per query image that could not be embedded).
        queries: query entries.
        gallery_size: gallery entries that embedded and were ranked.
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


TOP_K_COLUMNS = ["query", "rank", "gallery", "score", "error"]


def top_k_rows(query_paths: list[str], row_of: dict[str, int], failed: dict[str, str], scores: np.ndarray,
               ids: np.ndarray, gallery: list[str]) -> Iterable[list[object]]:
    """``query,rank,gallery,score,error`` rows of a top-k search, queries in input order.

    ``scores``/``ids`` hold one row per query that was embedded, in input order; an id of -1 (an
    approximate index that found fewer than k) is skipped. A query that failed gets one row with
    its error.
    """
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
    """Writes the ``top_k`` most similar gallery images of every query, best first.

    Rows are ``query,rank,gallery,score,error`` with rank 1..K, queries in input order. A query
    whose image fails gets one row with only ``query`` and ``error``; a gallery image that fails
    is left out of the ranking and counted in ``failed_gallery``. Images in both lists are
    embedded once (a query found in the gallery ranks itself first). A gallery entry naming a file
    listed before (``a.png`` and ``./a.png``) is ranked once, as in an index, and counted in
    ``duplicate_gallery``.

    Raises:
        ToolkitError: ``top_k < 1``, an empty list, or no gallery image could be embedded.
    """
    if top_k < 1:
        raise ToolkitError(f"--top-k {top_k}: must be 1 or more")
    if not query_paths or not gallery_paths:
        raise ToolkitError(
            f"need at least one query and one gallery image, got {len(query_paths)} and {len(gallery_paths)}"
        )
    listed = len(gallery_paths)
    gallery_paths = distinct_files(gallery_paths)
    embeddings, row_of, failed = embed_unique([*query_paths, *gallery_paths], embed_paths)
    gallery_rows = [row_of[p] for p in gallery_paths if p in row_of]
    if not gallery_rows:
        first = _first_failure(gallery_paths, failed)
        raise ToolkitError(f"none of the {len(gallery_paths)} gallery images could be read; first: {first}")
    gallery_ok = [p for p in gallery_paths if p in row_of]
    query_rows = [row_of[p] for p in query_paths if p in row_of]
    scores = np.zeros((0, 1), dtype=np.float32)
    indices = np.zeros((0, 1), dtype=np.int64)
    if query_rows:
        scores, indices = top_k_similar(
            embeddings[query_rows], embeddings[gallery_rows], top_k, chunk_bytes=chunk_bytes, device=device
        )
    k = min(top_k, len(gallery_rows))

    rows = top_k_rows(query_paths, row_of, failed, scores, indices, gallery_ok)
    written = _write_csv_atomic(Path(output_csv), TOP_K_COLUMNS, rows)
    return TopKResult(
        output_csv=Path(output_csv),
        rows_written=written,
        failed_rows=len(query_paths) - len(query_rows),
        queries=len(query_paths),
        gallery_size=len(gallery_rows),
        failed_gallery=len(gallery_paths) - len(gallery_rows),
        image_errors=failed,
        top_k=k,
        top_k_requested=top_k,
        duplicate_gallery=listed - len(gallery_paths),
    )


# ----------------------------------------------------------------------------- support set


@dataclass(frozen=True)
class SupportScoreResult:
    """What ``score_support`` wrote.

    Attributes:
        output_csv: the CSV written.
        rows_written: one row per query.
        failed_rows: query rows with an error.
        unknown_rows: queries predicted ``unknown`` (best cosine below the threshold).
        threshold: the threshold used, None when nothing can be unknown.
        failed_support: support images left out because they could not be embedded.
        classes_without_support: classes all of whose support images failed; never predicted.
        image_errors: {path: reason} for every image (query or support) that failed.
    """

    output_csv: Path
    rows_written: int
    failed_rows: int
    unknown_rows: int
    threshold: float | None
    failed_support: int
    classes_without_support: list[str]
    image_errors: dict[str, str]


def score_support(
    query_paths: Sequence[str],
    support: SupportSet,
    output_csv: str | Path,
    embed_paths: EmbedPaths,
    *,
    threshold: float | None = None,
) -> SupportScoreResult:
    """Classifies each query by its nearest class prototype; rows ``query,predicted_class,score,error``.

    ``predicted_class`` is ``unknown`` when the best cosine is below ``threshold``. A query
    whose image fails gets a row with only ``query`` and ``error``.

    Raises:
        ToolkitError: an empty query list, or no support image could be embedded.
    """
    if not query_paths:
        raise ToolkitError("need at least one query image, got none")
    embeddings, row_of, failed = embed_unique([*support.paths, *query_paths], embed_paths)
    ok = [i for i, p in enumerate(support.paths) if p in row_of]
    if not ok:
        first = _first_failure(support.paths, failed)
        raise ToolkitError(f"none of the {len(support.paths)} support images could be read; first: {first}")
    labels = support.labels[ok]
    present = set(labels.tolist())
    query_rows = [row_of[p] for p in query_paths if p in row_of]
    names: list[str] = []
    scores = np.zeros(0, dtype=np.float32)
    if query_rows:
        names, scores = classify_by_prototype(
            embeddings[query_rows],
            embeddings[[row_of[support.paths[i]] for i in ok]],
            labels,
            support.class_names,
            threshold=threshold,
        )

    def rows() -> Iterable[list[object]]:
        done = 0
        for query in query_paths:
            if query not in row_of:
                yield [query, "", "", one_line(failed[query])]
                continue
            yield [query, names[done], f"{float(scores[done]):.6f}", ""]
            done += 1

    written = _write_csv_atomic(Path(output_csv), ["query", "predicted_class", "score", "error"], rows())
    return SupportScoreResult(
        output_csv=Path(output_csv),
        rows_written=written,
        failed_rows=len(query_paths) - len(query_rows),
        unknown_rows=sum(1 for name in names if name == UNKNOWN) if threshold is not None else 0,
        threshold=threshold,
        failed_support=len(support.paths) - len(ok),
        classes_without_support=[c for i, c in enumerate(support.class_names) if i not in present],
        image_errors=failed,
    )
