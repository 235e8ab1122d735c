"""Pairs mode of `toolkit score`: ``image_a,image_b[,label]`` rows -> the same rows + ``score,same,error``.

Built for millions of rows: the CSV is read twice in blocks of ``BLOCK_ROWS`` (cell ids first,
then the rows again while writing), every per-row step is a C-level ``map``/``itemgetter`` or a
numpy operation, and memory stays at two int64 ids (and a label byte) per row plus one
embedding per distinct image. Each distinct image is embedded once.

A file without any double quote (the usual case: paths without commas) is read as lines split
on commas, which is exactly what the csv module would parse, and its lines are written back
as they are with ``,score,same,error`` appended; that skips re-parsing and re-quoting and
halves the time of the two passes. Any quote in the file switches both passes to the csv module.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from itertools import chain, repeat
from pathlib import Path
from typing import TextIO

import numpy as np

from scoring.csv_out import one_line, write_atomic
from scoring.image_lists import EmbedPaths, embed_unique
from scoring.pairs_csv import has_quotes, no_cyclic_gc, open_rows, read_ids, read_pairs_header
from toolkit.data.csv_files import open_csv
from toolkit.data.image_files import resolve
from toolkit.metrics.similarity import PAIR_CHUNK, PAIR_CHUNK_BYTES, pair_scores
from toolkit.errors import ToolkitError
from toolkit.metrics.verification import verification_metrics

OUTPUT_COLUMNS = ("score", "same", "error")


@dataclass(frozen=True)
class PairScoreResult:
    """What ``score_pairs`` wrote and measured.

    Attributes:
        output_csv: the CSV written.
        rows_written: data rows, one per input pair, in input order.
        failed_rows: rows with an empty score and a non-empty ``error``.
        unique_images: distinct image paths embedded (each once).
        image_errors: {resolved path: reason} for the images that could not be embedded.
        threshold: ``same`` is 1 where ``score >= threshold``.
        labelled_rows: rows with both a label and a score: the ones AUC and EER use.
        positives: labelled rows with label 1.
        negatives: labelled rows with label 0.
        roc_auc: ROC AUC, None without both kinds of labelled row.
        eer: equal error rate (FAR == FRR on the interpolated ROC), None likewise.
        eer_threshold: the score of the operating point nearest the EER, None likewise.
    """

    output_csv: Path
    rows_written: int
    failed_rows: int
    unique_images: int
    image_errors: dict[str, str]
    threshold: float
    labelled_rows: int = 0
    positives: int = 0
    negatives: int = 0
    roc_auc: float | None = None
    eer: float | None = None
    eer_threshold: float | None = None


def score_pairs(
    pairs_csv: str | Path,
    output_csv: str | Path,
    embed_paths: EmbedPaths,
    *,
    threshold: float = 0.5,
    chunk_size: int = PAIR_CHUNK,
    chunk_bytes: int = PAIR_CHUNK_BYTES,
) -> PairScoreResult:
    """Scores every ``image_a,image_b`` row of a CSV by the cosine of their embeddings.

    The output has the input's columns (less any old ``score``, ``same``, ``error``, so an
    output can be rescored), then ``score`` (6 decimals), ``same`` (1 if score >= threshold)
    and ``error``. Relative paths resolve against the CSV's folder. Labels (``label``: 1/0 or
    true/false, empty for none) give ROC AUC and EER over the rows that have a score.

    Args:
        pairs_csv: the input CSV.
        output_csv: where to write (atomically).
        embed_paths: see ``scoring.image_lists``; called once with the distinct resolved paths.
        threshold: the cosine at or above which a pair counts as ``same``.
        chunk_size: most pairs per scoring chunk.
        chunk_bytes: most bytes per gathered [chunk, D] block.

    Raises:
        ToolkitError: missing file, empty CSV, header without image_a/image_b, a bad label.
    """
    pairs_csv, output_csv = Path(pairs_csv), Path(output_csv)
    read_pairs_header(pairs_csv)
    quoted = has_quotes(pairs_csv)
    with no_cyclic_gc():
        header, ids, ids_a, ids_b, labels = read_ids(pairs_csv, quoted)
    cells = list(ids)
    resolved = [resolve(c, pairs_csv.parent) if c else "" for c in cells]
    embeddings, row_of, failed = embed_unique((p for p in resolved if p), embed_paths)
    cell_row = np.array([row_of.get(p, -1) for p in resolved], dtype=np.int64)
    a, b = np.frombuffer(ids_a, dtype=np.int64), np.frombuffer(ids_b, dtype=np.int64)
    scores = pair_scores(embeddings, cell_row[a], cell_row[b], chunk_size=chunk_size, chunk_bytes=chunk_bytes)

    def cell_error(column: str, cell_id: int) -> str | None:
        if cell_row[cell_id] >= 0:
            return None
        if not resolved[cell_id]:
            return f"{column} is empty"
        return f"{column} {cells[cell_id]}: {one_line(failed[resolved[cell_id]])}"

    errors = {}
    for i in np.flatnonzero(np.isnan(scores)).tolist():
        parts = [cell_error("image_a", ids_a[i]), cell_error("image_b", ids_b[i])]
        errors[i] = "; ".join(p for p in parts if p)

    keep = [j for j, c in enumerate(header) if c not in OUTPUT_COLUMNS]
    out_header = [header[j] for j in keep] + list(OUTPUT_COLUMNS)

    def fill(out: TextIO) -> int:
        csv.writer(out).writerow(out_header)
        return _write_rows(out, pairs_csv, quoted, len(header), keep, scores, scores >= threshold, errors)

    with no_cyclic_gc():
        written = write_atomic(output_csv, fill)
    label_arr = None if labels is None else np.frombuffer(labels, dtype=np.int8)
    return PairScoreResult(
        output_csv, written, len(errors), len(row_of) + len(failed), failed, threshold,
        **_label_metrics(scores, label_arr),
    )


def _write_rows(out: TextIO, path: Path, quoted: bool, width: int, keep: list[int], scores: np.ndarray,
                same: np.ndarray, errors: dict[int, str]) -> int:
    """Pass 2: the input rows again, block by block, each with its score, same and error.

    Returns:
        The number of rows written.
    """
    n = scores.shape[0]
    error_rows = np.array(sorted(errors), dtype=np.int64)
    whole = keep == list(range(width))
    writer = csv.writer(out)
    start = 0
    with open_csv(path) as f:
        _, blocks = open_rows(f, quoted, lines=True)
        for block in blocks:
            stop = start + len(block)
            if stop > n:
                break
            values = scores[start:stop].tolist()
            flags = np.where(same[start:stop], "1", "0").tolist()
            lo, hi = np.searchsorted(error_rows, [start, stop])
            failed = {i - start: errors[i] for i in error_rows[lo:hi].tolist()}
            if not quoted and whole and set(map(str.count, block, repeat(","))) <= {width - 1}:
                out.write(_append_to_lines(block, values, flags, failed))
            else:  # csv-parsed rows, rows of another length, or old score columns to drop
                rows = [line.split(",") for line in block] if not quoted else block
                texts = ["%.6f" % v for v in values]
                table = [[row[j] if j < len(row) else "" for j in keep] + [t, y, ""] for row, t, y in zip(rows, texts, flags)]
                for i, error in failed.items():
                    table[i][-3:] = ["", "", error]
                writer.writerows(table)
            start = stop
    if start != n:  # raised inside the write, so no output replaces the old one
        raise ToolkitError(f"{path}: the file changed while it was being scored")
    return n


def _append_to_lines(lines: list[str], scores: list[float], flags: list[str], failed: dict[int, str]) -> str:
    """``line,score,same,`` for each line (rows in ``failed`` get ``line,,,error``), as one string.

    The rows between two failures are formatted by one ``%`` operation over the whole run,
    several times faster than formatting row by row.
    """
    pieces = []
    begin = 0
    for end in [*sorted(failed), len(lines)]:
        if end > begin:
            cells = tuple(chain.from_iterable(zip(lines[begin:end], scores[begin:end], flags[begin:end])))
            pieces.append(("%s,%.6f,%s,\r\n" * (end - begin)) % cells)
        if end < len(lines):
            pieces.append(_csv_line([*lines[end].split(","), "", "", failed[end]]))
        begin = end + 1
    return "".join(pieces)


def _csv_line(row: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(row)
    return buffer.getvalue()


def _label_metrics(scores: np.ndarray, labels: np.ndarray | None) -> dict[str, float | int | None]:
    """AUC/EER fields of ``PairScoreResult`` over the rows with a label (>= 0) and a score."""
    if labels is None:
        return {}
    use = (labels >= 0) & ~np.isnan(scores)
    positives, negatives = int((labels[use] == 1).sum()), int((labels[use] == 0).sum())
    fields: dict[str, float | int | None] = {
        "labelled_rows": int(use.sum()), "positives": positives, "negatives": negatives
    }
    if positives and negatives:  # AUC and EER need both kinds of pair
        metrics = verification_metrics(scores[use], labels[use].astype(np.int64))
        fields.update(roc_auc=metrics["roc_auc"], eer=metrics["eer"], eer_threshold=metrics["threshold"])
    return fields
