"""``toolkit embed`` and ``toolkit score``: check the outputs and inputs, open one session, run the mode.

Both commands accept a model as a checkpoint (``.pt`` or a run folder), an ``.onnx`` or a
TensorRT ``.engine`` (``exporters.model_files.resolve_model``), run locally or on Ray
(``scoring.session``). Images that are missing or cannot be decoded never stop the job: their
rows carry an ``error``, their number is printed, and the exit code is 0 unless ``--strict``
(then 1, after the output is written). The score modes are ``scoring.modes``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from scoring.embedding import Settings
from scoring.image_lists import drop_non_finite, read_support_folder
from scoring.index.store import EmbeddingStore
from scoring.modes import ScoreRun, gallery_mode, index_mode, pairs_mode, report_failures, support_augment, support_mode
from scoring.output_checks import check_files
from scoring.pairs_csv import read_pairs_header
from scoring.report_html import write_report
from scoring.session import open_session
from toolkit.console import info as say
from toolkit.data.image_files import read_image_list
from toolkit.data.support_views import check_support_views
from toolkit.errors import ToolkitError
from toolkit.io import atomic_write
from toolkit.out_paths import check_out_file, write_error


def embed_images(model: str | Path, images: str | Path, out: str | Path = "embeddings.npz",
                 settings: Settings = Settings(), force: bool = False, tta: int = 0) -> Path:
    """``toolkit embed``: every image of a folder, CSV (``path`` column) or .txt list -> ``.npz``.

    The archive holds ``embeddings`` [N, D] float32 and ``paths`` [N] of the images that
    embedded, in input order, plus ``failed_paths`` and ``errors`` for those that did not. With
    ``tta`` views each embedding is the unit mean of the image's own and ``tta`` augmented views'
    (the model's fine-tuning augmentation, ``toolkit.data.support_views``), on this machine.

    Raises:
        ToolkitError: a bad model or image list, ``out`` exists without ``force``; ``FailedImages`` with
            ``strict`` and failures.
    """
    out = check_out_file(out, example="embeddings.npz")  # before any work: a bad --out costs nothing
    check_support_views(tta, "--tta", "image")
    check_files({"--out": out}, {"IMAGES": Path(images)}, force)
    paths = read_image_list(images)
    session = open_session(model, settings)
    timed = session.embed_paths
    augment = support_augment(session.info, tta, "--tta")
    embed_paths = timed
    if augment is not None:
        say(f"test-time augmentation: each embedding is the mean of the image and {tta} augmented views "
            f"(the model's fine-tuning augmentation; {tta + 1} forward passes per image, on this machine)")
        embed_paths = session.view_embedder(tta, augment)
    embeddings, ok_paths, errors = drop_non_finite(*embed_paths(paths))
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
    report_failures(errors, len(errors), len(paths), "images", settings.strict, out)
    return out


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
                 force: bool = False, support_tta: int | None = None) -> ScoreRun:
    """``toolkit score`` in one of its four modes (``scoring.modes``); every option is checked here, before any work.

    Raises:
        ToolkitError: a bad model, mode, option or input file, an output that exists without ``force`` or that is
            an input; ``FailedImages`` with ``strict`` and failures.
    """
    mode = _mode(pairs, query, gallery, support, index)
    if device != "cpu" and mode != "index":
        raise ToolkitError(f"--device {device}: moves a faiss index; it applies with --index only")
    if html is not None and mode == "pairs":
        raise ToolkitError("--html reports the gallery, index and support modes, not --pairs")
    if top_k < 1:
        raise ToolkitError(f"--top-k {top_k}: must be 1 or more")
    if support_tta is not None:
        if mode != "support":
            raise ToolkitError(f"--support-tta {support_tta}: augments support images; it applies with --support only")
        check_support_views(support_tta)
    if threshold is not None and not (math.isfinite(threshold) and -1.0 <= threshold <= 1.0):
        raise ToolkitError(f"--threshold {threshold}: must be a cosine between -1 and 1")
    out = check_out_file(out or DEFAULT_OUT[mode], example=DEFAULT_OUT[mode])  # before any work: a bad --out costs nothing
    outputs = {"--out": out}
    if html is not None:
        outputs["--html"] = check_out_file(html, "--html", example="report.html")
    check_files(outputs, {"--pairs": pairs, "--query": query, "--gallery": gallery}, force)
    # Read the inputs before loading the model: a malformed file fails fast.
    if pairs is not None:
        read_pairs_header(pairs)
    queries = read_image_list(query) if query is not None else []
    gallery_paths = read_image_list(gallery) if gallery is not None else []
    support_set = read_support_folder(support) if support is not None else None
    session = open_session(model, settings)
    if pairs is not None:
        return pairs_mode(session, pairs, out, threshold)
    if index is not None:
        run = index_mode(session, index, queries, out, top_k, device)
    elif support_set is not None:
        run = support_mode(session, queries, support_set, out, threshold, support_tta)
    else:
        run = gallery_mode(session, queries, gallery_paths, out, top_k)
    if html is not None:
        ranked = support_set if support_set is not None else EmbeddingStore(index).ok_paths() if index else gallery_paths
        say(f"wrote {html} ({write_report(html, mode, out, top_k=top_k, gallery=ranked)})")
    return run
