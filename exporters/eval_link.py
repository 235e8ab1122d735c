"""Which thresholds of an ``eval.json`` a model may carry.

``toolkit evaluate`` writes ``eval.json`` beside the checkpoint (or into ``--out``) and records
the checkpoint it evaluated: its path and the sha256 of its weights
(``toolkit.engine.weights_hash``). A threshold belongs to those weights only, and is worth
shipping only when it was chosen on the validation split. So ``toolkit export`` takes the
thresholds of the ``eval.json`` beside the checkpoint only when

* it records the same weights hash (an ``eval.json`` without one, from an older toolkit, must
  at least record the same checkpoint path; it is used with a warning), and
* they were calibrated on the validation split (``calibration.split == "val"``); thresholds
  chosen on test (no validation split, or an ``eval.json`` from before calibration existed) are
  refused unless ``--allow-test-thresholds``.

Anything else is one line (exit 2) saying what to run. Scoring a checkpoint directly is lenient:
thresholds of other weights are ignored with a warning. Both read the file as an
``toolkit.evaluate.report.EvalReport``: an incomplete ``eval.json`` is one line naming the missing
key, never a threshold silently dropped.
"""

from __future__ import annotations

import math
from pathlib import Path

from toolkit.console import warn
from toolkit.engine.checkpoint import Checkpoint
from toolkit.engine.run_folder import RunFolder
from toolkit.engine.weights_hash import weights_sha256
from toolkit.errors import ToolkitError
from toolkit.evaluate.report import EvalReport, Thresholds


def read_eval_report(path: Path) -> EvalReport | None:
    """The ``eval.json`` at ``path``, None when there is none.

    Raises:
        ToolkitError: the file is unreadable or incomplete; it names the missing key
            (``toolkit.evaluate.report``), so a renamed key never drops a threshold silently.
    """
    return EvalReport.read(path) if path.is_file() else None


def stored_thresholds(report: EvalReport) -> Thresholds:
    """The report's thresholds, a non-finite one as None."""
    def finite(value: float | None) -> float | None:
        return value if value is not None and math.isfinite(value) else None

    return Thresholds(finite(report.thresholds.pair), finite(report.thresholds.unknown))


def chosen_on(report: EvalReport) -> str:
    """How the report's thresholds were chosen, for messages."""
    if report.calibration is None:
        return ("has no calibration (written by an older toolkit evaluate): its verification.threshold was "
                "chosen on the test split")
    return f"has thresholds calibrated on the {report.calibration.split} split (the data had no validation split)"


def eval_json_of(ckpt: Checkpoint) -> Path:
    """The ``eval.json`` beside a checkpoint."""
    return RunFolder(Path(ckpt.path or RunFolder.CHECKPOINT).parent).eval_json


def other_weights(report: EvalReport, ckpt: Checkpoint) -> str | None:
    """Why ``report`` belongs to other weights than ``ckpt``'s, or None when it is theirs (or cannot tell).

    The weights hash decides when recorded (a run folder may have moved); an older ``eval.json``
    without one must at least name the same checkpoint file.
    """
    here, stored = Path(ckpt.path or RunFolder.CHECKPOINT), report.checkpoint
    if stored.weights_sha256:
        digest = weights_sha256(ckpt.weights)
        if stored.weights_sha256 == digest:
            return None
        return (f"it was computed for {stored.path or 'another checkpoint'} (weights sha256 "
                f"{stored.weights_sha256[:12]}), not for {here} (weights sha256 {digest[:12]})")
    if stored.path and Path(stored.path).resolve() != here.resolve():
        return f"it was computed for {stored.path}, not for {here}"
    return None


def linked_report(ckpt: Checkpoint) -> tuple[Path, EvalReport | None, str | None]:
    """The ``eval.json`` beside ``ckpt`` (its path, the report or None when absent, and why it belongs
    to other weights, or None when it is this checkpoint's)."""
    path = eval_json_of(ckpt)
    report = read_eval_report(path)
    return path, report, (other_weights(report, ckpt) if report is not None else None)


def export_thresholds(ckpt: Checkpoint, allow_test: bool = False) -> Thresholds:
    """The thresholds that ``toolkit export`` may write into the model's metadata.

    Raises:
        ToolkitError: the ``eval.json`` beside the checkpoint is incomplete (naming the key), belongs
            to other weights, or its thresholds were chosen on test and ``allow_test`` is False.
    """
    path, report, mismatch = linked_report(ckpt)
    if report is None:
        return Thresholds()
    if mismatch is not None:
        raise ToolkitError(f"{path}: {mismatch}; its thresholds cannot go into this model: run toolkit evaluate "
                           f"{ckpt.path} to calibrate this checkpoint, then export again")
    thresholds = stored_thresholds(report)
    split = "test" if report.calibration is None else report.calibration.split
    if split != "val" and thresholds != Thresholds():
        if not allow_test:
            raise ToolkitError(f"{path} {chosen_on(report)}; a shipped threshold must not be chosen on the "
                               "split it is reported on: evaluate with a validation split (data.val_fraction > 0) "
                               "and export again, or pass --allow-test-thresholds")
        warn(f"{path} {chosen_on(report)}; written into the model because of --allow-test-thresholds")
    if not report.checkpoint.weights_sha256:
        warn(f"{path} records no weights hash (written by an older toolkit evaluate), so it cannot be checked "
             f"against {ckpt.path}'s weights; rerun toolkit evaluate to be sure its thresholds are this checkpoint's")
    return thresholds


def checkpoint_thresholds(ckpt: Checkpoint) -> Thresholds:
    """The thresholds for scoring with a checkpoint directly: lenient, each doubt is a warning.

    Thresholds of other weights are ignored; an ``eval.json`` from before calibration gives its
    test-chosen ``verification.threshold``. An incomplete ``eval.json`` is still an error naming the key.
    """
    path, report, mismatch = linked_report(ckpt)
    if report is None:
        return Thresholds()
    if mismatch is not None:
        warn(f"{path}: {mismatch}; its thresholds are ignored (rerun toolkit evaluate)")
        return Thresholds()
    warn_uncalibrated(report, path)
    return stored_thresholds(report)


def warn_uncalibrated(report: EvalReport, path: Path) -> None:
    """Warn that a report from before calibration gives a pair threshold chosen on the test split."""
    if report.calibration is None:
        warn(f"{path} {chosen_on(report)}; using it as the pair threshold; rerun toolkit evaluate to "
             "calibrate on validation")
