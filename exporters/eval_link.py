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
thresholds of other weights are ignored with a warning.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.console import warn
from toolkit.engine.checkpoint import Checkpoint
from toolkit.engine.run_folder import RunFolder
from toolkit.engine.weights_hash import weights_sha256
from toolkit.errors import ToolkitError


@dataclass(frozen=True)
class EvalThresholds:
    """The thresholds of one ``eval.json`` and where they came from.

    Attributes:
        pair: the pair threshold (``calibration.threshold_eer``), None when absent.
        unknown: the open-set threshold (``calibration.unknown_threshold``), None when absent.
        split: the split they were chosen on: "val", "test" or "train".
        calibrated: False for an ``eval.json`` written before calibration existed: its pair
            threshold is ``verification.threshold``, chosen on the test split.
        checkpoint: the checkpoint path recorded by evaluate ("" when none).
        weights_sha256: the recorded weights hash ("" when none: an older evaluate).
        path: the ``eval.json``.
    """

    pair: float | None
    unknown: float | None
    split: str
    calibrated: bool
    checkpoint: str
    weights_sha256: str
    path: Path

    def chosen_on(self) -> str:
        """How the thresholds were chosen, for messages."""
        if not self.calibrated:
            return ("has no calibration (written by an older toolkit evaluate): its verification.threshold was "
                    "chosen on the test split")
        return f"has thresholds calibrated on the {self.split} split (the data had no validation split)"


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def read_eval_thresholds(path: Path) -> EvalThresholds | None:
    """The thresholds of ``path``, None when the file is missing or unusable (with a warning)."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        record = data.get("checkpoint") or {}
        checkpoint, digest = str(record.get("path") or ""), str(record.get("weights_sha256") or "")
        calibration = data.get("calibration")
        if isinstance(calibration, dict):
            return EvalThresholds(_finite(calibration.get("threshold_eer")), _finite(calibration.get("unknown_threshold")),
                                  str(calibration.get("split", "")), True, checkpoint, digest, path)
        return EvalThresholds(_finite(data["verification"]["threshold"]), None, "test", False, checkpoint, digest, path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        warn(f"{path}: no usable threshold ({type(exc).__name__}); ignoring it")
        return None


def eval_json_of(ckpt: Checkpoint) -> Path:
    """The ``eval.json`` beside a checkpoint."""
    return RunFolder(Path(ckpt.path or RunFolder.CHECKPOINT).parent).eval_json


def other_weights(stored: EvalThresholds, ckpt: Checkpoint) -> str | None:
    """Why ``stored`` belongs to other weights than ``ckpt``'s, or None when it is theirs (or cannot tell).

    The weights hash decides when recorded (a run folder may have moved); an older ``eval.json``
    without one must at least name the same checkpoint file.
    """
    here = Path(ckpt.path or RunFolder.CHECKPOINT)
    if stored.weights_sha256:
        digest = weights_sha256(ckpt.weights)
        if stored.weights_sha256 == digest:
            return None
        return (f"it was computed for {stored.checkpoint or 'another checkpoint'} (weights sha256 "
                f"{stored.weights_sha256[:12]}), not for {here} (weights sha256 {digest[:12]})")
    if stored.checkpoint and Path(stored.checkpoint).resolve() != here.resolve():
        return f"it was computed for {stored.checkpoint}, not for {here}"
    return None


def export_thresholds(ckpt: Checkpoint, allow_test: bool = False) -> tuple[float | None, float | None]:
    """``(pair, unknown)`` thresholds that ``toolkit export`` may write into the model's metadata.

    Raises:
        ToolkitError: the ``eval.json`` beside the checkpoint belongs to other weights, or its
            thresholds were chosen on test and ``allow_test`` is False.
    """
    stored = read_eval_thresholds(eval_json_of(ckpt))
    if stored is None:
        return None, None
    mismatch = other_weights(stored, ckpt)
    if mismatch is not None:
        raise ToolkitError(f"{stored.path}: {mismatch}; its thresholds cannot go into this model: run toolkit evaluate "
                           f"{ckpt.path} to calibrate this checkpoint, then export again")
    if stored.split != "val" and (stored.pair is not None or stored.unknown is not None):
        if not allow_test:
            raise ToolkitError(f"{stored.path} {stored.chosen_on()}; a shipped threshold must not be chosen on the "
                               "split it is reported on: evaluate with a validation split (data.val_fraction > 0) "
                               "and export again, or pass --allow-test-thresholds")
        warn(f"{stored.path} {stored.chosen_on()}; written into the model because of --allow-test-thresholds")
    if not stored.weights_sha256:
        warn(f"{stored.path} records no weights hash (written by an older toolkit evaluate), so it cannot be checked "
             f"against {ckpt.path}'s weights; rerun toolkit evaluate to be sure its thresholds are this checkpoint's")
    return stored.pair, stored.unknown


def checkpoint_thresholds(ckpt: Checkpoint) -> tuple[float | None, float | None]:
    """``(pair, unknown)`` for scoring with a checkpoint directly: lenient, each doubt is a warning.

    Thresholds of other weights are ignored; an ``eval.json`` from before calibration gives its
    test-chosen ``verification.threshold``.
    """
    stored = read_eval_thresholds(eval_json_of(ckpt))
    if stored is None:
        return None, None
    mismatch = other_weights(stored, ckpt)
    if mismatch is not None:
        warn(f"{stored.path}: {mismatch}; its thresholds are ignored (rerun toolkit evaluate)")
        return None, None
    if not stored.calibrated:
        warn(f"{stored.path} {stored.chosen_on()}; using it as the pair threshold; rerun toolkit evaluate to "
             "calibrate on validation")
    return stored.pair, stored.unknown
