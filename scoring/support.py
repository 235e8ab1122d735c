"""Support mode of `toolkit score`: each query classified by its nearest class prototype.

Rows ``query,predicted_class,score,error``. A prototype is the mean support embedding of a class,
renormalised, as in Prototypical Networks (Snell et al., 2017, eq. 1) with cosine instead of
squared Euclidean distance (``toolkit.metrics.similarity.classify_by_prototype``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scoring.csv_out import in_blocks, one_line, write_csv_atomic
from scoring.image_lists import EmbedPaths, SupportSet, embed_unique, first_failure
from toolkit.errors import ToolkitError
from toolkit.metrics.similarity import UNKNOWN, classify_by_prototype

SUPPORT_COLUMNS = ["query", "predicted_class", "score", "error"]


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
    support_embed_paths: EmbedPaths | None = None,
) -> SupportScoreResult:
    """Classifies each query by its nearest class prototype; rows ``query,predicted_class,score,error``.

    ``predicted_class`` is ``unknown`` when the best cosine is below ``threshold``. A query
    whose image fails gets a row with only ``query`` and ``error``. ``support_embed_paths``
    embeds the support images instead of ``embed_paths`` (support-set test-time augmentation,
    ``scoring.images.embed_files`` with views); queries always go through ``embed_paths``.

    Raises:
        ToolkitError: an empty query list, or no support image could be embedded.
    """
    if not query_paths:
        raise ToolkitError("need at least one query image, got none")
    if support_embed_paths is None:
        embeddings, row_of, failed = embed_unique([*support.paths, *query_paths], embed_paths)
        support_emb, support_row = embeddings, row_of
    else:
        support_emb, support_row, support_failed = embed_unique(support.paths, support_embed_paths)
        embeddings, row_of, failed = embed_unique(query_paths, embed_paths)
        failed = {**support_failed, **failed}
    ok = [i for i, p in enumerate(support.paths) if p in support_row]
    if not ok:
        first = first_failure(support.paths, failed)
        raise ToolkitError(f"none of the {len(support.paths)} support images could be read; first: {first}")
    labels = support.labels[ok]
    present = set(labels.tolist())
    query_rows = [row_of[p] for p in query_paths if p in row_of]
    names: list[str] = []
    scores = np.zeros(0, dtype=np.float32)
    if query_rows:
        names, scores = classify_by_prototype(
            embeddings[query_rows],
            support_emb[[support_row[support.paths[i]] for i in ok]],
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

    written = write_csv_atomic(Path(output_csv), SUPPORT_COLUMNS, in_blocks(rows()))
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
