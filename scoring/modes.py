"""The four modes of ``toolkit score``, each a function of (session, inputs, out) that writes one CSV.

* ``pairs_mode``: ``image_a,image_b[,label]`` rows -> the same rows + ``score,same,error``
  (``scoring.pairs``); with labels, ROC AUC and EER;
* ``gallery_mode``: the K nearest gallery images of every query (``scoring.top_k``);
* ``index_mode``: the K nearest images of a faiss index (``scoring.index.search``), the same CSV;
* ``support_mode``: each query's nearest class prototype (``scoring.support``), optionally with
  support-set test-time augmentation (``--support-tta``, ``toolkit.data.support_views``).

Every mode embeds through ``session.embed_paths``, each distinct image once. A missing or
unreadable image never loses other rows: its rows get an empty score and a non-empty ``error``,
their number is printed, and with ``--strict`` the job fails with exit code 1 after writing.

The threshold comes from ``--threshold``, else the model's metadata (``eval.json`` beside a
checkpoint, the ONNX ``metadata_props``, ``encoder.json`` beside an engine), else
``exporters.metadata.DEFAULT_THRESHOLD`` (0.5), and the command says which. Pairs use the pair
threshold (``threshold``); support mode uses the open-set cut-off calibrated on query-to-prototype
cosines (``unknown_threshold``), and falls back to the pair threshold with a warning for models
whose metadata predates it.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from exporters.metadata import DEFAULT_THRESHOLD, ModelInfo
from scoring.image_lists import SupportSet
from scoring.index.search import search
from scoring.pairs import PairScoreResult, score_pairs
from scoring.session import Session
from scoring.support import score_support
from scoring.top_k import score_top_k
from toolkit.config import AugmentConfig
from toolkit.console import info as say
from toolkit.console import warn
from toolkit.data.support_views import check_support_views
from toolkit.errors import ToolkitError


class FailedImages(ToolkitError):
    """``--strict`` and some images failed; the output was written anyway (exit code 1)."""

    exit_code = 1


def report_failures(errors: dict[str, str], rows: int, total: int, what: str, strict: bool, out: Path) -> None:
    """Prints how many of ``total`` ``what`` have an error (and the first reason); with ``strict`` raises ``FailedImages``."""
    if not errors and not rows:
        return
    detail = f"{len(errors)} image(s) could not be read"
    if errors:
        first, reason = next(iter(errors.items()))
        detail += f"; first: {first}: {reason}"
    warn(f"{rows} of {total} {what} have an error ({detail}); see the error column")
    if strict:
        raise FailedImages(f"--strict: {rows} of {total} {what} failed; {out} was written with an error column")


def resolve_threshold(threshold: float | None, info: ModelInfo, support: bool = False) -> float:
    """``--threshold``, else the model's stored one, else the default; says which.

    With ``support`` the stored one is the unknown (prototype) threshold; a model without one
    falls back to its pair threshold, with a warning.
    """
    if threshold is not None:
        say(f"threshold {threshold:.4f} (--threshold)")
        return threshold
    stored = info.thresholds
    if support and stored.unknown is not None:
        say(f"unknown threshold {stored.unknown:.4f} (from the model's metadata: toolkit evaluate's "
            "open-set cut-off, calibrated on validation query-to-prototype cosines)")
        return stored.unknown
    if support and stored.pair is not None:
        warn("the model's metadata has no unknown (prototype) threshold (evaluated by an older toolkit evaluate); "
             "using its pair threshold, which is calibrated for pairs, not prototypes; rerun toolkit evaluate and export")
    if stored.pair is not None:
        say(f"threshold {stored.pair:.4f} (from the model's metadata: toolkit evaluate's EER point)")
        return stored.pair
    warn(f"no threshold given or stored with the model (run toolkit evaluate, or pass --threshold); "
         f"using the default {DEFAULT_THRESHOLD}")
    return DEFAULT_THRESHOLD


@dataclass(frozen=True)
class ScoreRun:
    """What one mode wrote, and how long its stages took.

    Attributes:
        out: the CSV written.
        mode: "pairs", "top_k", "index" or "support".
        rows: data rows written.
        failed_rows: rows with an error.
        seconds: the whole mode after the model was opened (reading inputs, embedding, scoring, writing).
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

    def stages(self) -> str:
        """The stage times as the summary lines print them."""
        return f"{self.seconds:.2f} s: embedding {self.embedding_seconds:.2f} s, scoring {self.scoring_seconds:.2f} s"


def _run(session: Session, mode: str, out: Path, rows: int, failed_rows: int, start: float,
         embedded_before: float) -> ScoreRun:
    embedding = session.embed_paths.seconds - embedded_before
    return ScoreRun(out, mode, rows, failed_rows, time.perf_counter() - start, embedding)


def pairs_mode(session: Session, pairs: Path, out: Path, threshold: float | None) -> ScoreRun:
    """Scores every pair of the ``pairs`` CSV into ``out``; prints the pairs' AUC and EER when labelled."""
    cut = resolve_threshold(threshold, session.info)
    start, before = time.perf_counter(), session.embed_paths.seconds
    result = score_pairs(pairs, out, session.embed_paths, threshold=cut)
    run = _run(session, "pairs", out, result.rows_written, result.failed_rows, start, before)
    _summarise_pairs(result, run)
    report_failures(result.image_errors, result.failed_rows, result.rows_written, "pairs", session.settings.strict, out)
    return run


def gallery_mode(session: Session, queries: list[str], gallery: list[str], out: Path, top_k: int) -> ScoreRun:
    """Writes the ``top_k`` nearest ``gallery`` images of every query into ``out``."""
    start, before = time.perf_counter(), session.embed_paths.seconds
    top = score_top_k(queries, gallery, out, session.embed_paths, top_k=top_k)
    run = _run(session, "top_k", out, top.rows_written, top.failed_rows, start, before)
    clipped = f" (clipped from {top.top_k_requested}: the gallery has {top.gallery_size})" if top.k_clipped else ""
    if top.duplicate_gallery:
        warn(f"{top.duplicate_gallery} gallery entries name an image listed before; each image is ranked once")
    say(f"top {top.top_k}{clipped} of {top.gallery_size} gallery images for {top.queries} queries -> {out} "
        f"({top.rows_written} rows; {run.stages()})")
    report_failures(top.image_errors, top.failed_rows + top.failed_gallery,
                    top.queries + top.failed_gallery + top.gallery_size, "query/gallery images",
                    session.settings.strict, out)
    return run


def index_mode(session: Session, index: Path, queries: list[str], out: Path, top_k: int, device: str) -> ScoreRun:
    """Writes the ``top_k`` nearest images of the ``index`` folder for every query into ``out``; the
    session's model must be the index's (its fingerprint, computed once, is checked)."""
    fingerprint = session.fingerprint
    start, before = time.perf_counter(), session.embed_paths.seconds
    top = search(index, queries, out, session.embed_paths, fingerprint, source=str(session.model), top_k=top_k,
                 device=device)
    run = _run(session, "index", out, top.rows_written, top.failed_rows, start, before)
    say(f"top {top.top_k} of {top.gallery_size} indexed images for {top.queries} queries -> {out} "
        f"({top.rows_written} rows; {run.stages()})")
    report_failures(top.image_errors, top.failed_rows, top.queries, "query images", session.settings.strict, out)
    return run


def support_augment(info: ModelInfo, views: int, option: str = "--support-tta") -> AugmentConfig | None:
    """The model's recorded fine-tuning augmentation for ``views`` augmented views, None when ``views`` is 0.

    Raises:
        ToolkitError: views > 0 and the model records no augmentation (exported before it was recorded).
    """
    if views == 0:
        return None
    if info.support_augment is None:
        raise ToolkitError(f"{option} {views}: the model records no augmentation (exported before support_augment "
                           f"was recorded); export it again, or pass {option} 0")
    known = {f.name for f in dataclasses.fields(AugmentConfig)}
    values = {k: v for k, v in info.support_augment.items() if k in known}
    return AugmentConfig(**{k: (int(v) if k == "affine_fill" else v) for k, v in values.items()})  # type: ignore[arg-type]


def support_mode(session: Session, queries: list[str], support: SupportSet, out: Path,
                 threshold: float | None, support_tta: int | None = None) -> ScoreRun:
    """Classifies every query by the ``support`` set's nearest class prototype into ``out``.

    With ``support_tta`` views (default: the model's ``support_tta``) each support image stands for the
    mean of itself and that many views of the model's fine-tuning augmentation, embedded on this machine
    (``scoring.images.embed_files`` with views; with ``--engine ray`` the queries still go to the cluster).
    """
    cut = resolve_threshold(threshold, session.info, support=True)
    views = check_support_views(session.info.support_tta if support_tta is None else support_tta)
    augment = support_augment(session.info, views)
    start, before = time.perf_counter(), session.embed_paths.seconds
    support_embed = None
    if augment is not None:
        say(f"support-set test-time augmentation: each support image is the mean of itself and {views} augmented "
            "views (the model's fine-tuning augmentation)")
        support_embed = session.view_embedder(views, augment)
    res = score_support(queries, support, out, session.embed_paths, threshold=cut, support_embed_paths=support_embed)
    run = _run(session, "support", out, res.rows_written, res.failed_rows, start, before)
    say(f"classified {res.rows_written} queries over {len(support.class_names)} classes -> {out} "
        f"({res.unknown_rows} unknown below {cut:.4f}; {run.stages()})")
    if res.classes_without_support:
        warn(f"classes without any readable support image, never predicted: {', '.join(res.classes_without_support)}")
    report_failures(res.image_errors, res.failed_rows + res.failed_support, res.rows_written + len(support.paths),
                    "query/support images", session.settings.strict, out)
    return run


def _summarise_pairs(result: PairScoreResult, run: ScoreRun) -> None:
    rate = result.rows_written / max(run.scoring_seconds, 1e-9)
    say(f"scored {result.rows_written} pairs over {result.unique_images} unique images -> {result.output_csv} "
        f"({run.stages()}; {rate:,.0f} pairs/s)")
    if result.roc_auc is not None:
        say(f"labelled pairs: {result.labelled_rows} ({result.positives} same, {result.negatives} different): "
            f"ROC AUC {result.roc_auc:.4f}, EER {result.eer:.4f} at threshold {result.eer_threshold:.4f}")
    elif result.labelled_rows:
        say(f"labelled pairs: {result.labelled_rows}, but AUC/EER need both same and different pairs")
