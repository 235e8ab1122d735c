"""``toolkit embed`` and ``toolkit score``: open a backend, embed image files, write the result.

Both commands accept a model as a checkpoint (``.pt`` or a run folder), an ``.onnx`` or a
TensorRT ``.engine`` (``exporters.model_files.resolve_model``). Images that are missing or cannot
be decoded never stop the job: their rows carry an ``error``, their number is printed, and
the exit code is 0 unless ``--strict`` (then 1, after the output is written).

The threshold comes from ``--threshold``, else the model's metadata (``eval.json`` beside a
checkpoint, the ONNX ``metadata_props``, ``encoder.json`` beside an engine), else
``exporters.metadata.DEFAULT_THRESHOLD`` (0.5), and the command says which. Pairs use the pair
threshold (``threshold``); ``--support`` uses the open-set cut-off calibrated on query-to-
prototype cosines (``unknown_threshold``), and falls back to the pair threshold with a warning
for models whose metadata predates it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exporters.metadata import DEFAULT_THRESHOLD
from exporters.runtime import Backend
from scoring import score
from scoring.embedding import Settings, TimedEmbedder, open_embedder
from scoring.image_lists import drop_non_finite
from scoring.output_checks import check_files
from scoring.pairs_csv import read_pairs_header
from toolkit.console import info as say
from toolkit.console import warn
from toolkit.io import atomic_write
from toolkit.errors import ToolkitError
from toolkit.out_paths import check_out_file, write_error


class FailedImages(ToolkitError):
    """``--strict`` and some images failed; the output was written anyway (exit code 1)."""

    exit_code = 1


def _report_failures(errors: dict[str, str], rows: int, total: int, what: str, strict: bool, out: Path) -> None:
    if not errors and not rows:
        return
    detail = f"{len(errors)} image(s) could not be read"
    if errors:
        first, reason = next(iter(errors.items()))
        detail += f"; first: {first}: {reason}"
    warn(f"{rows} of {total} {what} have an error ({detail}); see the error column")
    if strict:
        raise FailedImages(f"--strict: {rows} of {total} {what} failed; {out} was written with an error column")


# ----------------------------------------------------------------------------- embed


def embed_images(model: str | Path, images: str | Path, out: str | Path = "embeddings.npz",
                 settings: Settings = Settings(), force: bool = False) -> Path:
    """``toolkit embed``: every image of a folder, CSV (``path`` column) or .txt list -> ``.npz``.

    The archive holds ``embeddings`` [N, D] float32 and ``paths`` [N] of the images that
    embedded, in input order, plus ``failed_paths`` and ``errors`` for those that did not.

    Raises:
        ToolkitError: a bad model or image list, ``out`` exists without ``force``; ``FailedImages`` with
            ``strict`` and failures.
    """
    out = check_out_file(out, example="embeddings.npz")  # before any work: a bad --out costs nothing
    check_files({"--out": out}, {"IMAGES": Path(images)}, force)
    paths = score.read_image_list(images)
    backend = open_embedder(model, settings)
    timed = TimedEmbedder(backend, settings)
    embeddings, ok_paths, errors = drop_non_finite(*timed(paths))
    out = Path(out)
    try:
        with atomic_write(out, "wb") as handle:  # a handle, so numpy does not append another .npz
            np.savez(handle, embeddings=embeddings.astype(np.float32), paths=np.array(ok_paths, dtype=str),
                     failed_paths=np.array(list(errors), dtype=str), errors=np.array(list(errors.values()), dtype=str))
    except OSError as exc:
        raise write_error(out, exc) from None
    rate = len(paths) / max(timed.seconds, 1e-9)
    say(f"embedded {len(ok_paths)} of {len(paths)} images -> {out} ([{len(ok_paths)}, {embeddings.shape[1]}] "
        f"float32; {timed.seconds:.2f} s, {rate:,.0f} img/s)")
    _report_failures(errors, len(errors), len(paths), "images", settings.strict, out)
    return out


# ----------------------------------------------------------------------------- score


def resolve_threshold(threshold: float | None, backend: Backend | Any, support: bool = False) -> float:
    """``--threshold``, else the model's stored one, else the default; says which.

    With ``support`` the stored one is the unknown (prototype) threshold; a model without one
    falls back to its pair threshold, with a warning.
    """
    if threshold is not None:
        say(f"threshold {threshold:.4f} (--threshold)")
        return threshold
    if support and backend.info.unknown_threshold is not None:
        say(f"unknown threshold {backend.info.unknown_threshold:.4f} (from the model's metadata: toolkit evaluate's "
            "open-set cut-off, calibrated on validation query-to-prototype cosines)")
        return backend.info.unknown_threshold
    if support and backend.info.threshold is not None:
        warn("the model's metadata has no unknown (prototype) threshold (evaluated by an older toolkit evaluate); "
             "using its pair threshold, which is calibrated for pairs, not prototypes; rerun toolkit evaluate and export")
    if backend.info.threshold is not None:
        say(f"threshold {backend.info.threshold:.4f} (from the model's metadata: toolkit evaluate's EER point)")
        return backend.info.threshold
    warn(f"no threshold given or stored with the model (run toolkit evaluate, or pass --threshold); "
         f"using the default {DEFAULT_THRESHOLD}")
    return DEFAULT_THRESHOLD


@dataclass(frozen=True)
class ScoreRun:
    """What one ``score_images`` call wrote, and how long its stages took.

    Attributes:
        out: the CSV written.
        mode: "pairs", "top_k" or "support".
        rows: data rows written.
        failed_rows: rows with an error.
        seconds: the whole job after the model was loaded (reading inputs, embedding, scoring, writing).
        embedding_seconds: decoding and running the model.
    """

    out: Path
    mode: str
    rows: int
    failed_rows: int
    seconds: float
    embedding_seconds: float

    @property
    def scoring_seconds(self) -> float:
        """Everything but the embedding: reading the inputs, similarity, writing the CSV."""
        return max(self.seconds - self.embedding_seconds, 0.0)


def _mode(pairs: Path | None, query: Path | None, gallery: Path | None, support: Path | None,
          index: Path | None = None) -> str:
    usage = "choose one mode: --pairs CSV | --query Q --gallery G [--top-k K] | --query Q --index DIR | --support S --query Q"
    if index is not None:
        if pairs or gallery or support or query is None:
            raise ToolkitError(f"--index searches with --query only; {usage}")
        return "index"
    if pairs is not None:
        if query or gallery or support:
            raise ToolkitError(f"--pairs cannot be combined with --query/--gallery/--support; {usage}")
        return "pairs"
    if query is not None and gallery is not None and support is None:
        return "top_k"
    if query is not None and support is not None and gallery is None:
        return "support"
    raise ToolkitError(usage)


DEFAULT_OUT = {"pairs": "scores.csv", "top_k": "matches.csv", "index": "matches.csv", "support": "predictions.csv"}


def score_images(model: str | Path, *, pairs: Path | None = None, query: Path | None = None,
                 gallery: Path | None = None, support: Path | None = None, top_k: int = 5,
                 out: Path | None = None, threshold: float | None = None, settings: Settings = Settings(),
                 index: Path | None = None, device: str = "cpu", html: Path | None = None,
                 force: bool = False) -> ScoreRun:
    """``toolkit score`` in one of its three modes (see ``scoring.score``).

    Raises:
        ToolkitError: a bad model, mode or input file, an output that exists without ``force`` or that is
            an input; ``FailedImages`` with ``strict`` and failures.
    """
    mode = _mode(pairs, query, gallery, support, index)
    if device != "cpu" and mode != "index":
        raise ToolkitError(f"--device {device}: moves a faiss index; it applies with --index only")
    if html is not None and mode == "pairs":
        raise ToolkitError("--html reports the gallery, index and support modes, not --pairs")
    if top_k < 1:
        raise ToolkitError(f"--top-k {top_k}: must be 1 or more")
    if threshold is not None and not (math.isfinite(threshold) and -1.0 <= threshold <= 1.0):
        raise ToolkitError(f"--threshold {threshold}: must be a cosine between -1 and 1")
    out = check_out_file(out or DEFAULT_OUT[mode], example=DEFAULT_OUT[mode])  # before any work: a bad --out costs nothing
    outputs = {"--out": out}
    if html is not None:
        outputs["--html"] = check_out_file(html, "--html", example="report.html")
    check_files(outputs, {"--pairs": pairs, "--query": query, "--gallery": gallery}, force)
    # Read the inputs before loading the model: a malformed file fails fast.
    if mode == "pairs":
        read_pairs_header(pairs)  # type: ignore[arg-type]
    queries = score.read_image_list(query) if query is not None else []
    gallery_paths = score.read_image_list(gallery) if gallery is not None else []
    support_set = score.read_support_folder(support) if support is not None else None
    if mode == "index":
        run = _score_index(model, index, queries, out, top_k, device, settings)  # type: ignore[arg-type]
        _html(html, mode, out, top_k, _indexed_paths(index))  # type: ignore[arg-type]
        return run
    backend = open_embedder(model, settings)
    timed = TimedEmbedder(backend, settings)
    start = time.perf_counter()
    if mode == "pairs":
        cut = resolve_threshold(threshold, backend)
        result = score.score_pairs(pairs, out, timed, threshold=cut)  # type: ignore[arg-type]
        run = ScoreRun(out, mode, result.rows_written, result.failed_rows, time.perf_counter() - start, timed.seconds)
        _summarise_pairs(result, run)
        _report_failures(result.image_errors, result.failed_rows, result.rows_written, "pairs", settings.strict, out)
    elif mode == "top_k":
        top = score.score_top_k(queries, gallery_paths, out, timed, top_k=top_k)
        run = ScoreRun(out, mode, top.rows_written, top.failed_rows, time.perf_counter() - start, timed.seconds)
        clipped = f" (clipped from {top.top_k_requested}: the gallery has {top.gallery_size})" if top.k_clipped else ""
        if top.duplicate_gallery:
            warn(f"{top.duplicate_gallery} gallery entries name an image listed before; each image is ranked once")
        say(f"top {top.top_k}{clipped} of {top.gallery_size} gallery images for {top.queries} queries -> {out} "
            f"({top.rows_written} rows; {_stages(run)})")
        rows = top.failed_rows + top.failed_gallery
        _report_failures(top.image_errors, rows, top.queries + top.failed_gallery + top.gallery_size,
                         "query/gallery images", settings.strict, out)
    else:
        assert support_set is not None  # by _mode
        cut = resolve_threshold(threshold, backend, support=True)
        res = score.score_support(queries, support_set, out, timed, threshold=cut)
        run = ScoreRun(out, mode, res.rows_written, res.failed_rows, time.perf_counter() - start, timed.seconds)
        say(f"classified {res.rows_written} queries over {len(support_set.class_names)} classes -> {out} "
            f"({res.unknown_rows} unknown below {cut:.4f}; {_stages(run)})")
        if res.classes_without_support:
            warn(f"classes without any readable support image, never predicted: {', '.join(res.classes_without_support)}")
        _report_failures(res.image_errors, res.failed_rows + res.failed_support,
                         res.rows_written + len(support_set.paths), "query/support images", settings.strict, out)
    _html(html, mode, out, top_k, gallery_paths if mode == "top_k" else support_set)
    return run


def _score_index(model: str | Path, index: Path, queries: list[str], out: Path, top_k: int, device: str,
                 settings: Settings) -> ScoreRun:
    from scoring.index.run import index_search

    res, embedding_seconds, seconds = index_search(model, index, queries, out, top_k=top_k, device=device,
                                                   settings=settings)
    run = ScoreRun(out, "index", res.rows_written, res.failed_rows, seconds, embedding_seconds)
    say(f"top {res.top_k} of {res.gallery_size} indexed images for {res.queries} queries -> {out} "
        f"({res.rows_written} rows; {_stages(run)})")
    _report_failures(res.image_errors, res.failed_rows, res.queries, "query images", settings.strict, out)
    return run


def _html(html: Path | None, mode: str, out: Path, top_k: int, gallery: object) -> None:
    if html is None:
        return
    from scoring.report_html import write_report

    report = write_report(html, mode, out, top_k=top_k, gallery=gallery)
    say(f"wrote {html} ({report})")


def _stages(run: ScoreRun) -> str:
    return f"{run.seconds:.2f} s: embedding {run.embedding_seconds:.2f} s, scoring {run.scoring_seconds:.2f} s"


def _summarise_pairs(result: score.PairScoreResult, run: ScoreRun) -> None:
    rate = result.rows_written / max(run.scoring_seconds, 1e-9)
    say(f"scored {result.rows_written} pairs over {result.unique_images} unique images -> {result.output_csv} "
        f"({_stages(run)}; {rate:,.0f} pairs/s)")
    if result.roc_auc is not None:
        say(f"labelled pairs: {result.labelled_rows} ({result.positives} same, {result.negatives} different): "
            f"ROC AUC {result.roc_auc:.4f}, EER {result.eer:.4f} at threshold {result.eer_threshold:.4f}")
    elif result.labelled_rows:
        say(f"labelled pairs: {result.labelled_rows}, but AUC/EER need both same and different pairs")


def _indexed_paths(index: Path) -> list[str]:
    from scoring.index.store import EmbeddingStore

    return EmbeddingStore(index).ok_paths()
