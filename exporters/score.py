"""Similarity scoring on l2-normalised embeddings, and the CSV in/out of `toolkit score`.

Three modes, each one call that embeds every unique image once and writes one CSV:

* pairs (``score_pairs``): ``image_a,image_b[,label]`` rows -> the same rows plus
  ``score,same,error``; with labels, ROC AUC and EER;
* query vs gallery (``score_top_k``): rows ``query,rank,gallery,score,error``, the K nearest
  gallery images of every query;
* few-shot support set (``score_support``): rows ``query,predicted_class,score,error`` by the
  nearest class prototype (mean support embedding, renormalised), as in Prototypical Networks
  (Snell et al., 2017, eq. 1) with cosine instead of squared Euclidean distance.

This module never decodes an image: the caller passes ``embed_paths(paths) -> (embeddings
[len(ok_paths), D], ok_paths, errors {path: one-line reason})``, so the scoring is testable
with fake embeddings. A missing or unreadable image never loses other rows: its rows get an
empty score and a non-empty ``error``; every result counts those rows in ``failed_rows``.
"""

from __future__ import annotations

import csv
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from toolkit.data import IMAGE_EXTENSIONS
from toolkit.errors import ToolkitError
from toolkit.verification import verification_metrics

EmbedPaths = Callable[[list[str]], tuple[np.ndarray, list[str], dict[str, str]]]

PAIR_CHUNK = 262_144
# The row-wise gather is memory-bound: blocks of a few MiB stay in cache and ran 1.5-3x faster
# here than 262,144-row blocks at D >= 512, so the chunk is also capped by bytes.
PAIR_CHUNK_BYTES = 8 * 2**20
# Query chunks are sized so one similarity block (chunk x G float32) stays under 256 MiB.
TOPK_CHUNK_BYTES = 256 * 2**20
UNKNOWN = "unknown"
OUTPUT_COLUMNS = ("score", "same", "error")


# ----------------------------------------------------------------------------- vectorised core


def l2_normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32: [N, D] -> [N, D]."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def pair_scores(
    embeddings: np.ndarray,
    index_a: np.ndarray,
    index_b: np.ndarray,
    *,
    chunk_size: int = PAIR_CHUNK,
    chunk_bytes: int = PAIR_CHUNK_BYTES,
) -> np.ndarray:
    """Row-wise cosine ``<e[a_i], e[b_i]>`` for unit embeddings, computed in chunks.

    Args:
        embeddings: [M, D] l2-normalised embeddings.
        index_a: [N] rows of ``embeddings``; -1 marks a missing image.
        index_b: [N] likewise.
        chunk_size: most pairs per chunk.
        chunk_bytes: most bytes of one gathered [chunk, D] block; the smaller limit wins.

    Returns:
        [N] float32 scores, NaN where either index is -1.
    """
    index_a = np.asarray(index_a, dtype=np.int64)
    index_b = np.asarray(index_b, dtype=np.int64)
    scores = np.full(index_a.shape[0], np.nan, dtype=np.float32)
    valid = np.flatnonzero((index_a >= 0) & (index_b >= 0))
    if valid.size == 0:
        return scores
    dim = embeddings.shape[1]
    chunk = max(1, min(chunk_size, chunk_bytes // (4 * max(dim, 1))))
    for start in range(0, valid.size, chunk):
        rows = valid[start : start + chunk]
        block = np.take(embeddings, index_a[rows], axis=0)  # chunk x D
        block *= np.take(embeddings, index_b[rows], axis=0)
        scores[rows] = block.sum(axis=1)
    return scores


def similarity_chunk_rows(gallery_size: int, chunk_bytes: int = TOPK_CHUNK_BYTES) -> int:
    """Queries per chunk so that one ``rows x gallery_size`` float32 block fits ``chunk_bytes``."""
    return max(1, chunk_bytes // (4 * max(gallery_size, 1)))


def top_k_similar(
    queries: np.ndarray,
    gallery: np.ndarray,
    k: int,
    *,
    chunk_bytes: int = TOPK_CHUNK_BYTES,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar gallery rows of every query, best first.

    The full Q x G matrix is never allocated: chunks of ``similarity_chunk_rows(G, chunk_bytes)``
    queries are multiplied against the whole gallery (``torch.mm``) and reduced with ``topk``,
    so 100k x 100k runs in 256 MiB blocks (about 670 queries per block).

    Args:
        queries: [Q, D] unit embeddings.
        gallery: [G, D] unit embeddings, G >= 1.
        k: neighbours wanted; clipped to G.
        chunk_bytes: memory bound of one similarity block.
        device: where the matrix products run ("cpu" or a CUDA device).

    Returns:
        scores [Q, min(k, G)] float32 and indices [Q, min(k, G)] int64 into ``gallery``.
    """
    if gallery.shape[0] == 0 or k < 1:
        raise ValueError(f"need a non-empty gallery and k >= 1, got G={gallery.shape[0]}, k={k}")
    k = min(k, gallery.shape[0])
    n = queries.shape[0]
    scores = np.empty((n, k), dtype=np.float32)
    indices = np.empty((n, k), dtype=np.int64)
    gal = torch.as_tensor(np.ascontiguousarray(gallery, dtype=np.float32)).to(device)
    rows = similarity_chunk_rows(gallery.shape[0], chunk_bytes)
    for start in range(0, n, rows):
        q = torch.as_tensor(np.ascontiguousarray(queries[start : start + rows], dtype=np.float32))
        sim = torch.mm(q.to(device), gal.T)  # rows x G
        top = torch.topk(sim, k, dim=1, largest=True, sorted=True)
        scores[start : start + rows] = top.values.cpu().numpy()
        indices[start : start + rows] = top.indices.cpu().numpy()
    return scores, indices


def classify_by_prototype(
    queries: np.ndarray,
    support: np.ndarray,
    support_labels: np.ndarray,
    class_names: Sequence[str],
    *,
    threshold: float | None = None,
) -> tuple[list[str], np.ndarray]:
    """Nearest-prototype classification by cosine similarity.

    A class prototype is the mean of its support embeddings, renormalised to unit length.
    Classes without support embeddings have no prototype and are never predicted.

    Args:
        queries: [Q, D] unit embeddings.
        support: [S, D] unit embeddings.
        support_labels: [S] ints indexing ``class_names``.
        class_names: C names.
        threshold: below this best cosine, predict ``"unknown"``; None never does.

    Returns:
        Q predicted class names and their [Q] float32 cosine to the nearest prototype.
    """
    labels = np.asarray(support_labels, dtype=np.int64)
    in_range = labels.size == 0 or (labels.min() >= 0 and labels.max() < len(class_names))
    if labels.shape != (support.shape[0],) or not in_range:
        raise ValueError(f"support_labels must be {support.shape[0]} ints in [0, {len(class_names)})")
    counts = np.bincount(labels, minlength=len(class_names))
    sums = np.zeros((len(class_names), support.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, support)
    present = np.flatnonzero(counts > 0)
    if present.size == 0:
        raise ValueError("no class has a support embedding")
    prototypes = l2_normalise(sums[present] / counts[present, None])  # C' x D
    scores, nearest = top_k_similar(queries, prototypes, 1)
    scores = scores[:, 0]
    names = [class_names[c] for c in present[nearest[:, 0]]]
    if threshold is not None:
        names = [UNKNOWN if s < threshold else name for name, s in zip(names, scores)]
    return names, scores


# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class SupportSet:
    """A few-shot support set read from a folder with one sub-folder per class.

    Attributes:
        paths: every support image.
        labels: [len(paths)] ints indexing ``class_names``.
        class_names: the sub-folder names, sorted.
    """

    paths: list[str]
    labels: np.ndarray
    class_names: list[str]


def _images_under(folder: Path) -> list[str]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    return [str(p) for p in files]


def _resolve(entry: str, base: Path) -> str:
    path = Path(entry).expanduser()
    return str(path if path.is_absolute() else base / path)


def read_image_list(path: str | Path) -> list[str]:
    """Image paths from a folder (recursive, sorted), a CSV with a ``path`` column or a .txt list.

    Relative entries of a CSV or .txt list resolve against the list's folder; blank lines and
    ``#`` comments in a .txt are skipped.

    Raises:
        ToolkitError: a missing path, an empty folder or list, a CSV without ``path``.
    """
    path = Path(path)
    expected = "expected a folder of images, a .csv with a `path` column or a .txt list of paths"
    if not path.exists():
        raise ToolkitError(f"{path}: no such file or folder; {expected}")
    if path.is_dir():
        images = _images_under(path)
        if not images:
            raise ToolkitError(f"{path}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
        return images
    suffix = path.suffix.lower()
    if suffix == ".txt":
        with open(path, encoding="utf-8-sig") as f:
            lines = [line.strip() for line in f]
        images = [_resolve(line, path.parent) for line in lines if line and not line.startswith("#")]
    elif suffix == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as f:
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
                images.append(_resolve(entry, path.parent))
    else:
        raise ToolkitError(f"{path}: unsupported list type {suffix!r}; {expected}")
    if not images:
        raise ToolkitError(f"{path}: the list has no image paths")
    return images


def read_support_folder(path: str | Path) -> SupportSet:
    """A support set from ``path/<class>/**/<image>``; files directly in ``path`` are ignored.

    Raises:
        ToolkitError: ``path`` is not a folder, has no class sub-folders, or a class has no image.
    """
    path = Path(path)
    if not path.is_dir():
        raise ToolkitError(f"{path}: not a folder; expected one sub-folder of images per class")
    classes = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ToolkitError(f"{path}: no class sub-folders; expected one sub-folder of images per class")
    paths: list[str] = []
    labels: list[int] = []
    for label, folder in enumerate(classes):
        images = _images_under(folder)
        if not images:
            looked_for = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise ToolkitError(f"{folder}: class folder has no images (looked for {looked_for})")
        paths += images
        labels += [label] * len(images)
    return SupportSet(paths, np.asarray(labels, dtype=np.int64), [d.name for d in classes])


def _embed_unique(
    paths: Iterable[str], embed_paths: EmbedPaths
) -> tuple[np.ndarray, dict[str, int], dict[str, str]]:
    """Embeds each distinct path once.

    Returns:
        [M, D] unit embeddings, {path: row} for the images that embedded, and
        {path: reason} for those that did not.
    """
    unique = list(dict.fromkeys(paths))
    if not unique:
        return np.zeros((0, 0), dtype=np.float32), {}, {}
    embeddings, ok_paths, errors = embed_paths(unique)
    embeddings = np.asarray(embeddings, dtype=np.float32)
    if len(ok_paths) == 0:
        embeddings = embeddings.reshape(0, embeddings.shape[-1] if embeddings.ndim == 2 else 0)
    if embeddings.ndim != 2 or embeddings.shape[0] != len(ok_paths):
        raise ValueError(f"embed_paths returned {embeddings.shape} embeddings for {len(ok_paths)} paths")
    row_of = {p: i for i, p in enumerate(ok_paths)}
    failed = {p: errors.get(p, "not embedded (no reason given)") for p in unique if p not in row_of}
    return l2_normalise(embeddings), row_of, failed


# ----------------------------------------------------------------------------- output


def _write_csv_atomic(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> int:
    """Writes a CSV to a temporary file beside ``path``, then renames it over ``path``.

    A crash or Ctrl-C therefore never leaves a half-written CSV under the final name.

    Returns:
        The number of data rows written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            count = 0
            for row in rows:
                writer.writerow(row)
                count += 1
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return count


def _one_line(reason: str) -> str:
    return " ".join(str(reason).split())


def _first_failure(paths: Sequence[str], failed: dict[str, str]) -> str:
    first = next(p for p in paths if p in failed)
    return f"{first}: {_one_line(failed[first])}"


# ----------------------------------------------------------------------------- pairs mode

_LABELS = {"1": 1, "true": 1, "0": 0, "false": 0, "": -1}


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


def _read_pairs_header(path: Path, reader: Iterable[list[str]]) -> list[str]:
    header = next(iter(reader), None)
    if header is None or not any(cell.strip() for cell in header):
        raise ToolkitError(
            f"{path}: the CSV is empty; expected a header image_a,image_b[,label] and one row per pair"
        )
    header = [cell.strip() for cell in header]
    missing = [c for c in ("image_a", "image_b") if c not in header]
    if missing:
        raise ToolkitError(
            f"{path}: the header has columns {header}; expected image_a and image_b (optional label), "
            f"missing {', '.join(missing)}"
        )
    return header


def _data_rows(reader: Iterable[list[str]]) -> Iterable[list[str]]:
    # Blank lines are not pairs; skipping them in both passes keeps the row numbering aligned.
    return (row for row in reader if any(cell.strip() for cell in row))


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

    The file is read twice (indices first, rows again while writing) so memory stays at a few
    ints per row plus one embedding per distinct image.

    Args:
        pairs_csv: the input CSV.
        output_csv: where to write (atomically).
        embed_paths: see the module docstring; called once with the distinct resolved paths.
        threshold: the cosine at or above which a pair counts as ``same``.
        chunk_size: most pairs per scoring chunk.
        chunk_bytes: most bytes per gathered [chunk, D] block.

    Raises:
        ToolkitError: missing file, empty CSV, header without image_a/image_b, a bad label.
    """
    pairs_csv, output_csv = Path(pairs_csv), Path(output_csv)
    if not pairs_csv.is_file():
        raise ToolkitError(f"{pairs_csv}: no such file; expected a CSV with columns image_a,image_b[,label]")
    cell_ids: dict[str, int] = {}  # distinct raw cell -> id, so each path resolves once
    ids_a: list[int] = []
    ids_b: list[int] = []
    labels: list[int] = []
    with open(pairs_csv, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = _read_pairs_header(pairs_csv, reader)
        col_a, col_b = header.index("image_a"), header.index("image_b")
        col_label = header.index("label") if "label" in header else None
        for row in _data_rows(reader):
            for col, ids in ((col_a, ids_a), (col_b, ids_b)):
                cell = row[col].strip() if col < len(row) else ""
                ids.append(cell_ids.setdefault(cell, len(cell_ids)))
            if col_label is not None:
                value = row[col_label].strip() if col_label < len(row) else ""
                if value.lower() not in _LABELS:
                    raise ToolkitError(
                        f"{pairs_csv}: line {reader.line_num}: label {value!r} is not 1, 0, true, false or empty"
                    )
                labels.append(_LABELS[value.lower()])
    n = len(ids_a)
    if n == 0:
        raise ToolkitError(f"{pairs_csv}: no pairs after the header {','.join(header)}")

    cells = list(cell_ids)
    resolved = [_resolve(c, pairs_csv.parent) if c else "" for c in cells]
    embeddings, row_of, failed = _embed_unique((p for p in resolved if p), embed_paths)
    cell_row = np.array([row_of.get(p, -1) for p in resolved], dtype=np.int64)
    ids_a_arr, ids_b_arr = np.asarray(ids_a, dtype=np.int64), np.asarray(ids_b, dtype=np.int64)
    scores = pair_scores(
        embeddings, cell_row[ids_a_arr], cell_row[ids_b_arr], chunk_size=chunk_size, chunk_bytes=chunk_bytes
    )

    def cell_error(column: str, cell_id: int) -> str | None:
        if cell_row[cell_id] >= 0:
            return None
        if not resolved[cell_id]:
            return f"{column} is empty"
        return f"{column} {cells[cell_id]}: {_one_line(failed[resolved[cell_id]])}"

    errors: dict[int, str] = {}
    for i in np.flatnonzero(np.isnan(scores)).tolist():
        parts = [cell_error("image_a", ids_a[i]), cell_error("image_b", ids_b[i])]
        errors[i] = "; ".join(p for p in parts if p)

    keep = [j for j, c in enumerate(header) if c not in OUTPUT_COLUMNS]
    same = (scores >= threshold).tolist()
    score_list = scores.tolist()

    def rows() -> Iterable[list[str]]:
        with open(pairs_csv, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            next(reader)
            i = -1
            for i, row in enumerate(_data_rows(reader)):
                if i >= n:
                    break
                out = [row[j] if j < len(row) else "" for j in keep]
                if i in errors:
                    yield out + ["", "", errors[i]]
                else:
                    yield out + [f"{score_list[i]:.6f}", "1" if same[i] else "0", ""]
            if i + 1 != n:  # raised inside the write, so no output replaces the old one
                raise ToolkitError(f"{pairs_csv}: the file changed while it was being scored")

    written = _write_csv_atomic(output_csv, [header[j] for j in keep] + list(OUTPUT_COLUMNS), rows())
    return PairScoreResult(
        output_csv, written, len(errors), len(row_of) + len(failed), failed, threshold,
        **_label_metrics(scores, labels),
    )


def _label_metrics(scores: np.ndarray, labels: list[int]) -> dict[str, float | int | None]:
    """AUC/EER fields of ``PairScoreResult`` over the rows with a label (>= 0) and a score."""
    if not labels:
        return {}
    label_arr = np.asarray(labels, dtype=np.int64)
    use = (label_arr >= 0) & ~np.isnan(scores)
    positives, negatives = int((label_arr[use] == 1).sum()), int((label_arr[use] == 0).sum())
    fields: dict[str, float | int | None] = {
        "labelled_rows": int(use.sum()), "positives": positives, "negatives": negatives
    }
    if positives and negatives:  # AUC and EER need both kinds of pair
        metrics = verification_metrics(scores[use], label_arr[use])
        fields.update(roc_auc=metrics["roc_auc"], eer=metrics["eer"], eer_threshold=metrics["threshold"])
    return fields


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

    @property
    def k_clipped(self) -> bool:
        """True when the gallery had fewer images than the K asked for."""
        return self.top_k < self.top_k_requested


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
    embedded once (a query found in the gallery ranks itself first).

    Raises:
        ToolkitError: ``top_k < 1``, an empty list, or no gallery image could be embedded.
    """
    if top_k < 1:
        raise ToolkitError(f"--top-k {top_k}: must be 1 or more")
    if not query_paths or not gallery_paths:
        raise ToolkitError(
            f"need at least one query and one gallery image, got {len(query_paths)} and {len(gallery_paths)}"
        )
    embeddings, row_of, failed = _embed_unique([*query_paths, *gallery_paths], embed_paths)
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

    def rows() -> Iterable[list[object]]:
        done = 0
        for query in query_paths:
            if query not in row_of:
                yield [query, "", "", "", _one_line(failed[query])]
                continue
            for rank, (s, g) in enumerate(zip(scores[done].tolist(), indices[done].tolist()), start=1):
                yield [query, rank, gallery_ok[g], f"{s:.6f}", ""]
            done += 1

    written = _write_csv_atomic(Path(output_csv), ["query", "rank", "gallery", "score", "error"], rows())
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
    embeddings, row_of, failed = _embed_unique([*support.paths, *query_paths], embed_paths)
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
                yield [query, "", "", _one_line(failed[query])]
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
