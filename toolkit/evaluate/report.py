"""``eval.json``: the typed report ``toolkit evaluate`` writes and every reader reads.

Layout (``format_version`` 1)::

    format_version    1
    fewshot           episodic few-shot accuracy (``toolkit.evaluate.episodes.run_episodes``)
    classification    kNN, class-balanced kNN, nearest prototype; ``rule`` names the reported one
    verification      {roc_auc, eer, threshold}: pairs of the evaluated split at the calibrated EER point
    calibration       ``Calibration``: thresholds chosen on the validation split
    operating_points  what the pair thresholds give on the evaluated split
    open_set          what the unknown threshold gives on open-set episodes of the evaluated split, or null
    checkpoint        {path, kind, epoch, embedding_dim, weights_sha256}: the weights these numbers belong to
    data              {source, evaluated_split, train_images, evaluated_images, evaluated_classes, notes}
    protocol          how the numbers were made (seed, pairs, who chose the rule, the split check)

A file without ``format_version`` is version 1 when it has ``calibration``, ``operating_points``
or ``open_set``, else version 0: written before calibration existed, whose only threshold is
``verification.threshold`` (chosen on the test split). Reading a key that is missing, or holds the
wrong kind of value, is one ``ToolkitError`` naming the file and the key: a renamed key can never
silently drop a threshold.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError
from toolkit.io import write_json_atomic

FORMAT_VERSION = 1
CALIBRATED_SECTIONS = ("calibration", "operating_points", "open_set")  # from version 1 on
_RERUN = "rerun toolkit evaluate to write it again"


@dataclass(frozen=True)
class Thresholds:
    """The cosine thresholds a deployed model carries; None where none was calibrated.

    Attributes:
        pair: a pair is "same" when its cosine is >= this (``calibration.threshold_eer``).
        unknown: ``toolkit score --support`` answers "unknown" when a query's best prototype cosine
            is below this (``calibration.unknown_threshold``).
    """

    pair: float | None = None
    unknown: float | None = None


_KINDS = {float: "a number", int: "an integer", str: "a string", dict: "an object", list: "a list"}


def _value(section: dict[str, Any], key: str, where: str, source: str, kind: type,
           optional: bool = False, nullable: bool = False) -> Any:
    """``section[key]`` checked to be of ``kind`` (null allowed when ``nullable``; None when absent and ``optional``)."""
    name = f"{where}.{key}" if where else key
    if key not in section:
        if optional:
            return None
        raise ToolkitError(f"{source}: key {name} is missing; {_RERUN}")
    value = section[key]
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else kind):
        shown = json.dumps(value)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise ToolkitError(f"{source}: key {name} is {shown}; expected {_KINDS[kind]}"
                           f"{' or null' if nullable else ''}; {_RERUN}")
    return float(value) if kind is float else value


def _section(data: dict[str, Any], key: str, source: str, nullable: bool = False) -> Any:
    return _value(data, key, "", source, dict, nullable=nullable)


@dataclass(frozen=True)
class Calibration:
    """The operating points chosen on one split (``toolkit.evaluate.calibration.calibrate``).

    Attributes:
        split: the split they were chosen on: "val", or the evaluated split when there was no validation split.
        threshold_eer: the pair threshold at the equal-error point.
        threshold_far: the lowest pair threshold whose false-accept rate is at most the target FAR; None when refused.
        unknown_threshold: the open-set cut-off; None when the split cannot form open-set episodes.
        open_set_shape: ``{known_way, unknown_way, shot, query}`` of the episodes ``unknown_threshold`` was chosen on.
        genuine_pairs, impostor_pairs: the pairs behind the pair thresholds.
        threshold_eer_ci95, threshold_far_ci95: 95% bootstrap intervals (None when refused).
        threshold_far_refused: why ``threshold_far`` is None, or None.

    The last six are None in files written before they existed.
    """

    split: str
    threshold_eer: float
    threshold_far: float | None
    unknown_threshold: float | None
    open_set_shape: dict[str, int] | None = None
    genuine_pairs: int | None = None
    impostor_pairs: int | None = None
    threshold_eer_ci95: list[float] | None = None
    threshold_far_ci95: list[float] | None = None
    threshold_far_refused: str | None = None

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(self.threshold_eer, self.unknown_threshold)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str) -> Calibration:
        """Raises ``ToolkitError`` naming a missing or mistyped key."""
        def get(key: str, kind: Any, optional: bool = False) -> Any:
            return _value(data, key, "calibration", source, kind, optional=optional, nullable=True)

        return cls(split=_value(data, "split", "calibration", source, str),
                   threshold_eer=_value(data, "threshold_eer", "calibration", source, float),
                   threshold_far=get("threshold_far", float),
                   unknown_threshold=get("unknown_threshold", float),
                   open_set_shape=get("open_set_shape", dict, True), genuine_pairs=get("genuine_pairs", int, True),
                   impostor_pairs=get("impostor_pairs", int, True),
                   threshold_eer_ci95=get("threshold_eer_ci95", list, True),
                   threshold_far_ci95=get("threshold_far_ci95", list, True),
                   threshold_far_refused=get("threshold_far_refused", str, True))


@dataclass(frozen=True)
class Verification:
    """ROC AUC and EER of cosine similarity on pairs of the evaluated split, and the pair threshold."""

    roc_auc: float
    eer: float
    threshold: float

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str) -> Verification:
        return cls(*(_value(data, key, "verification", source, float) for key in ("roc_auc", "eer", "threshold")))


@dataclass(frozen=True)
class EvaluatedCheckpoint:
    """The checkpoint an ``eval.json`` belongs to; ``weights_sha256`` is "" in files of an older evaluate."""

    path: str
    kind: str
    epoch: int
    embedding_dim: int
    weights_sha256: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str) -> EvaluatedCheckpoint:
        def get(key: str, kind: type) -> Any:
            return _value(data, key, "checkpoint", source, kind)

        digest = _value(data, "weights_sha256", "checkpoint", source, str, optional=True, nullable=True)
        return cls(get("path", str), get("kind", str), get("epoch", int), get("embedding_dim", int), digest or "")


@dataclass(frozen=True)
class EvalReport:
    """The content of one ``eval.json`` (see the module docstring for each section).

    ``calibration`` and ``operating_points`` are None only in a version-0 file (before calibration
    existed); ``open_set`` is None also when the calibration split could not form open-set episodes.
    """

    fewshot: dict[str, Any]
    classification: dict[str, Any]
    verification: Verification
    calibration: Calibration | None
    operating_points: dict[str, Any] | None
    open_set: dict[str, Any] | None
    checkpoint: EvaluatedCheckpoint
    data: dict[str, Any]
    protocol: dict[str, Any]
    format_version: int = FORMAT_VERSION

    @property
    def thresholds(self) -> Thresholds:
        """The calibrated thresholds; a version-0 file gives its test-chosen ``verification.threshold``."""
        if self.calibration is None:
            return Thresholds(self.verification.threshold, None)
        return self.calibration.thresholds

    def to_json(self) -> dict[str, Any]:
        """The ``eval.json`` content, sections in the documented order."""
        return {"format_version": self.format_version, "fewshot": self.fewshot, "classification": self.classification,
                "verification": asdict(self.verification),
                "calibration": None if self.calibration is None else self.calibration.to_json(),
                "operating_points": self.operating_points, "open_set": self.open_set,
                "checkpoint": asdict(self.checkpoint), "data": self.data, "protocol": self.protocol}

    def write(self, path: str | Path) -> None:
        """Write ``path`` atomically: a reader (``toolkit export``, ``score``) never sees half a file."""
        write_json_atomic(path, self.to_json())

    @classmethod
    def from_json(cls, data: Any, source: str) -> EvalReport:
        """Inverse of ``to_json``; reads version 0 and 1 files.

        Raises:
            ToolkitError: not a JSON object, a newer format, or a key missing or of the wrong kind (named).
        """
        if not isinstance(data, dict):
            raise ToolkitError(f"{source}: not an eval.json (expected a JSON object); {_RERUN}")
        version = data.get("format_version", 1 if any(k in data for k in CALIBRATED_SECTIONS) else 0)
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            raise ToolkitError(f"{source}: key format_version is {json.dumps(version)}; expected 0 or 1")
        if version > FORMAT_VERSION:
            raise ToolkitError(f"{source}: eval.json format {version} is newer than this toolkit (reads up to "
                               f"{FORMAT_VERSION}); upgrade the toolkit")
        calibrated = version >= 1
        calibration = _section(data, "calibration", source) if calibrated else None
        return cls(fewshot=_section(data, "fewshot", source), classification=_section(data, "classification", source),
                   verification=Verification.from_json(_section(data, "verification", source), source),
                   calibration=None if calibration is None else Calibration.from_json(calibration, source),
                   operating_points=_section(data, "operating_points", source) if calibrated else None,
                   open_set=_section(data, "open_set", source, nullable=True) if calibrated else None,
                   checkpoint=EvaluatedCheckpoint.from_json(_section(data, "checkpoint", source), source),
                   data=_section(data, "data", source), protocol=_section(data, "protocol", source),
                   format_version=version)

    @classmethod
    def read(cls, path: str | Path) -> EvalReport:
        """The report in ``path``.

        Raises:
            ToolkitError: unreadable, not JSON, or not a complete ``eval.json`` (naming the key).
        """
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ToolkitError(f"{path}: not readable as JSON ({type(exc).__name__}); {_RERUN}") from None
        return cls.from_json(data, str(path))
