"""What a deployed encoder needs besides its weights: input framing, normalisation, threshold.

The same fields travel three ways, so every backend preprocesses identically:

* from a checkpoint (``Checkpoint.preprocessing``, ``eval.json``);
* in ``encoder.json`` beside an exported model;
* in the ONNX file's ``metadata_props`` (one key per field, JSON-encoded values).

Input framing, as in training's evaluation view: the shorter side is resized to
``resize_size``, the centre square of ``image_size`` is cropped, pixels become
``(x / 255 - mean) / std`` per channel, NCHW float32. Two thresholds, both chosen by
``toolkit evaluate`` on the validation split (``calibration`` of ``eval.json`` next to the
checkpoint), or None:

* ``threshold``: the cosine at which a pair counts as "same" (``calibration.threshold_eer``);
* ``unknown_threshold``: the best query-to-prototype cosine below which ``toolkit score
  --support`` answers "unknown" (``calibration.unknown_threshold``).

An ``eval.json`` written before calibration existed has only ``verification.threshold``
(chosen on the test split): scoring a checkpoint uses it as the pair threshold, with a warning.
``toolkit export`` is stricter (``exporters.eval_link``): only thresholds of the same weights,
calibrated on validation, go into a model.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from exporters.eval_link import checkpoint_thresholds, read_eval_thresholds
from toolkit.engine.checkpoint import TOOLKIT_VERSION, Checkpoint
from toolkit.engine.run_folder import RunFolder
from toolkit.io import write_json_atomic
from toolkit.console import warn
from toolkit.errors import ToolkitError

FORMAT = "toolkit-encoder"
INPUT_NAME = "images"
OUTPUT_NAME = "embeddings"
# Used when neither --threshold nor the model's metadata gives one. Embeddings are unit
# vectors, so 0.5 is a cosine of 60 degrees: a neutral guess, not a calibrated operating point.
DEFAULT_THRESHOLD = 0.5
MAX_SIZE = 8192  # largest image side / embedding dim accepted from metadata: a batch must fit in memory


@dataclass(frozen=True)
class ModelInfo:
    """The metadata of an exported (or exportable) encoder.

    Attributes:
        image_size: network input side S; the input is [N, channels, S, S].
        resize_size: shorter side the image is resized to before the centre crop (>= image_size).
        channels: 1 (grayscale) or 3 (RGB).
        mean: per-channel mean of the normalisation (in [0, 1] units).
        std: per-channel std of the normalisation.
        embedding_dim: D of the [N, D] l2-normalised output.
        threshold: pair verification threshold (cosine), None when evaluation stored none.
        unknown_threshold: open-set cut-off on the best query-to-prototype cosine, None when none stored.
        kind: "pretrain" or "finetune".
        toolkit_version: version of the toolkit that exported the model.
        opset: ONNX opset of the exported graph, None before export.
        checkpoint: the checkpoint the model came from.
        features: what the model embeds: "embedding" (the fine-tuning head's output) or "backbone"
            (the backbone's pooled, penultimate features).
    """

    image_size: int
    resize_size: int
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    embedding_dim: int
    threshold: float | None = None
    kind: str = "pretrain"
    toolkit_version: str = TOOLKIT_VERSION
    opset: int | None = None
    checkpoint: str = ""
    unknown_threshold: float | None = None
    features: str = "backbone"

    @property
    def input_chw(self) -> tuple[int, int, int]:
        return self.channels, self.image_size, self.image_size

    def with_opset(self, opset: int) -> ModelInfo:
        return replace(self, opset=opset)

    def to_dict(self) -> dict[str, Any]:
        """The ``encoder.json`` content (also what ``metadata_props`` holds, key by key)."""
        data = {"format": FORMAT, "input_name": INPUT_NAME, "output_name": OUTPUT_NAME, **asdict(self)}
        data["mean"], data["std"] = list(self.mean), list(self.std)
        data["input_shape"] = ["batch", *self.input_chw]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> ModelInfo:
        """Inverse of ``to_dict``; extra keys are ignored.

        Raises:
            ToolkitError: not toolkit metadata, or a field missing or of the wrong kind.
        """
        if data.get("format") != FORMAT:
            raise ToolkitError(f"{source}: not a toolkit model (no '{FORMAT}' metadata); export one with toolkit export")
        try:
            info = cls(
                image_size=int(data["image_size"]),
                resize_size=int(data.get("resize_size") or data["image_size"]),
                channels=int(data["channels"]),
                mean=tuple(float(m) for m in data["mean"]),
                std=tuple(float(s) for s in data["std"]),
                embedding_dim=int(data["embedding_dim"]),
                threshold=None if data.get("threshold") is None else float(data["threshold"]),
                kind=str(data.get("kind", "pretrain")),
                toolkit_version=str(data.get("toolkit_version", "")),
                opset=None if data.get("opset") is None else int(data["opset"]),
                checkpoint=str(data.get("checkpoint", "")),
                unknown_threshold=None if data.get("unknown_threshold") is None else float(data["unknown_threshold"]),
                features=str(data.get("features", "embedding" if data.get("kind") == "finetune" else "backbone")),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ToolkitError(f"{source}: broken toolkit metadata ({type(exc).__name__}: {exc})") from None
        if info.channels not in (1, 3) or len(info.mean) != info.channels or len(info.std) != info.channels:
            raise ToolkitError(
                f"{source}: metadata has channels={info.channels} with mean {list(info.mean)}, std {list(info.std)}"
            )
        _check_ranges(info, source)
        return info


def _check_ranges(info: ModelInfo, source: str) -> None:
    """Refuse values no model can have: a NaN threshold would silently call every pair "different".

    Raises:
        ToolkitError: naming the first key out of range and what would be valid.
    """
    sizes = {"image_size": info.image_size, "resize_size": info.resize_size, "embedding_dim": info.embedding_dim}
    for key, size in sizes.items():
        if not 1 <= size <= MAX_SIZE:
            raise ToolkitError(f"{source}: metadata key {key} is {size}; must be an integer from 1 to {MAX_SIZE}")
    if info.resize_size < info.image_size:
        raise ToolkitError(f"{source}: metadata key resize_size {info.resize_size} is below image_size "
                           f"{info.image_size}; the centre crop needs resize_size >= image_size")
    if not all(math.isfinite(m) for m in info.mean):
        raise ToolkitError(f"{source}: metadata key mean {list(info.mean)} must hold finite numbers")
    if not all(math.isfinite(s) and s > 0 for s in info.std):
        raise ToolkitError(f"{source}: metadata key std {list(info.std)} must hold finite numbers above 0 "
                           "(the input is divided by it)")
    for key in ("threshold", "unknown_threshold"):
        value = getattr(info, key)
        if value is not None and not (math.isfinite(value) and -1.0 <= value <= 1.0):
            raise ToolkitError(f"{source}: metadata key {key} is {value}; a cosine threshold must be a finite "
                               "number in [-1, 1] (or null for none)")


def eval_thresholds(folder: Path) -> tuple[float | None, float | None]:
    """``(pair threshold, unknown threshold)`` of ``folder/eval.json``; None where absent.

    Reads ``calibration.threshold_eer`` and ``calibration.unknown_threshold``; an older
    ``eval.json`` without ``calibration`` gives its ``verification.threshold`` (with a warning: it
    was chosen on the test split) and no unknown threshold. Whose weights they belong to is
    checked by ``exporters.eval_link``.
    """
    stored = read_eval_thresholds(RunFolder(folder).eval_json)
    if stored is None:
        return None, None
    if not stored.calibrated:
        warn(f"{stored.path} {stored.chosen_on()}; using it as the pair threshold; rerun toolkit evaluate to "
             "calibrate on validation")
    return stored.pair, stored.unknown


def info_from_checkpoint(ckpt: Checkpoint, thresholds: tuple[float | None, float | None] | None = None) -> ModelInfo:
    """Metadata of a loaded ``Checkpoint``.

    Args:
        ckpt: the checkpoint.
        thresholds: ``(pair, unknown)``; default: those of the ``eval.json`` beside it when it
            was computed on these weights (``exporters.eval_link.checkpoint_thresholds``).

    Raises:
        ToolkitError: no preprocessing recorded, or a threshold out of [-1, 1].
    """
    pre = ckpt.preprocessing
    if pre is None:
        raise ToolkitError(f"{ckpt.path}: the checkpoint records no preprocessing; it cannot be exported")
    path = Path(ckpt.path or RunFolder.CHECKPOINT)
    pair_threshold, unknown_threshold = checkpoint_thresholds(ckpt) if thresholds is None else thresholds
    info = ModelInfo(
        image_size=pre.image_size,
        resize_size=pre.resize_size,
        channels=pre.channels,
        mean=pre.mean,
        std=pre.std,
        embedding_dim=ckpt.embedding_dim,
        threshold=pair_threshold,
        unknown_threshold=unknown_threshold,
        kind=ckpt.kind,
        checkpoint=str(path),
        features=ckpt.features,
    )
    _check_ranges(info, f"{path.parent} (checkpoint and eval.json)")
    return info


def write_json(info: ModelInfo, path: Path) -> None:
    write_json_atomic(path, info.to_dict())


def read_json(path: Path) -> ModelInfo:
    """Metadata from an ``encoder.json``.

    Raises:
        ToolkitError: unreadable JSON or not toolkit metadata.
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ToolkitError(f"{path}: not readable as JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise ToolkitError(f"{path}: not a toolkit model description (expected a JSON object)")
    return ModelInfo.from_dict(data, str(path))


def to_props(info: ModelInfo) -> dict[str, str]:
    """``metadata_props`` entries: every ``encoder.json`` key with its JSON-encoded value."""
    return {key: json.dumps(value) for key, value in info.to_dict().items()}


def from_props(props: dict[str, str], source: str) -> ModelInfo:
    """Inverse of ``to_props``.

    Raises:
        ToolkitError: no toolkit metadata or a broken value.
    """
    try:
        data = {key: json.loads(value) for key, value in props.items() if key in _PROP_KEYS}
    except ValueError as exc:
        raise ToolkitError(f"{source}: broken toolkit metadata ({exc})") from None
    return ModelInfo.from_dict(data, source)


_PROP_KEYS = {"format", "input_name", "output_name", "input_shape", *(f.name for f in fields(ModelInfo))}
