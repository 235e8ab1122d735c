"""What a deployed encoder needs besides its weights: input framing, normalisation, threshold.

``ModelInfo`` composes the checkpoint's ``Preprocessing`` (``toolkit.data.preprocess``) and the
``Thresholds`` of its ``eval.json`` (``toolkit.evaluate.report``). It travels three ways, so
every backend preprocesses identically:

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

from exporters.eval_link import checkpoint_thresholds, read_eval_report, stored_thresholds, warn_uncalibrated
from toolkit.data.preprocess import Preprocessing
from toolkit.data.support_views import MAX_SUPPORT_VIEWS
from toolkit.engine.checkpoint import TOOLKIT_VERSION, Checkpoint
from toolkit.engine.run_folder import RunFolder
from toolkit.io import write_json_atomic
from toolkit.errors import ToolkitError
from toolkit.evaluate.report import Thresholds

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
        preprocessing: how images become the [N, channels, S, S] input (``toolkit.data.preprocess``).
        embedding_dim: D of the [N, D] l2-normalised output.
        thresholds: the pair and unknown thresholds (``toolkit.evaluate.report``), None where evaluation stored none.
        kind: "pretrain" or "finetune".
        toolkit_version: version of the toolkit that exported the model.
        opset: ONNX opset of the exported graph, None before export.
        checkpoint: the checkpoint the model came from.
        features: what the model embeds: "embedding" (the fine-tuning head's output) or "backbone"
            (the backbone's pooled, penultimate features).
        openvino_bf16_min_cosine: the smallest row-wise cosine of the ONNX graph on OpenVINO in bf16 to
            PyTorch fp32 on the export's parity images; None where export did not measure it (no
            ``openvino`` or no native bf16). The default backend takes OpenVINO bf16 only where it is
            recorded at >= ``exporters.parity.BF16_MIN_COSINE``. Measured on the staged graph, then
            written into its ``metadata_props`` as into ``encoder.json`` (``onnx_export.rewrite_props``).
        support_tta: augmented views per support image that ``toolkit score --support`` averages by
            default (the recipe's ``finetune.support_tta``; ``toolkit.data.support_views``).
        support_augment: the views' distribution, the checkpoint's ``finetune.augment`` as a dict of
            ``toolkit.config.AugmentConfig`` fields; None in models exported before it was recorded.

    On disk (``to_dict``) the fields are flat, ``threshold`` and ``unknown_threshold`` for the thresholds.
    """

    preprocessing: Preprocessing
    embedding_dim: int
    thresholds: Thresholds = Thresholds()
    kind: str = "pretrain"
    toolkit_version: str = TOOLKIT_VERSION
    opset: int | None = None
    checkpoint: str = ""
    features: str = "backbone"
    openvino_bf16_min_cosine: float | None = None
    support_tta: int = 0
    support_augment: dict[str, float] | None = None

    @property
    def input_chw(self) -> tuple[int, int, int]:
        return self.preprocessing.input_chw

    def with_opset(self, opset: int) -> ModelInfo:
        return replace(self, opset=opset)

    def to_dict(self) -> dict[str, Any]:
        """The ``encoder.json`` content (also what ``metadata_props`` holds, key by key)."""
        return {"format": FORMAT, "input_name": INPUT_NAME, "output_name": OUTPUT_NAME, **self.preprocessing.to_dict(),
                "embedding_dim": self.embedding_dim, "threshold": self.thresholds.pair, "kind": self.kind,
                "toolkit_version": self.toolkit_version, "opset": self.opset, "checkpoint": self.checkpoint,
                "unknown_threshold": self.thresholds.unknown, "features": self.features,
                "input_shape": ["batch", *self.input_chw],
                **({"support_tta": self.support_tta} if self.support_tta else {}),
                **({} if self.support_augment is None else {"support_augment": dict(self.support_augment)}),
                **({} if self.openvino_bf16_min_cosine is None
                   else {"openvino_bf16_min_cosine": self.openvino_bf16_min_cosine})}

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str) -> ModelInfo:
        """Inverse of ``to_dict``; extra keys are ignored.

        Raises:
            ToolkitError: not toolkit metadata, or a field missing or of the wrong kind.
        """
        if data.get("format") != FORMAT:
            raise ToolkitError(f"{source}: not a toolkit model (no '{FORMAT}' metadata); export one with toolkit export")
        try:
            preprocessing = Preprocessing(
                image_size=int(data["image_size"]), resize_size=int(data.get("resize_size") or data["image_size"]),
                channels=int(data["channels"]), mean=tuple(float(m) for m in data["mean"]),
                std=tuple(float(s) for s in data["std"]))
            info = cls(
                preprocessing=preprocessing,
                embedding_dim=int(data["embedding_dim"]),
                thresholds=Thresholds(_optional_float(data.get("threshold")), _optional_float(data.get("unknown_threshold"))),
                kind=str(data.get("kind", "pretrain")),
                toolkit_version=str(data.get("toolkit_version", "")),
                opset=None if data.get("opset") is None else int(data["opset"]),
                checkpoint=str(data.get("checkpoint", "")),
                features=str(data.get("features", "embedding" if data.get("kind") == "finetune" else "backbone")),
                openvino_bf16_min_cosine=_optional_float(data.get("openvino_bf16_min_cosine")),
                support_tta=_count(data.get("support_tta", 0)),
                support_augment=_augment_dict(data.get("support_augment")),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ToolkitError(f"{source}: broken toolkit metadata ({type(exc).__name__}: {exc})") from None
        if preprocessing.channels not in (1, 3) or not len(preprocessing.mean) == len(preprocessing.std) == preprocessing.channels:
            raise ToolkitError(f"{source}: metadata has channels={preprocessing.channels} with mean "
                               f"{list(preprocessing.mean)}, std {list(preprocessing.std)}")
        _check_ranges(info, source)
        return info


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _count(value: Any) -> int:
    """A JSON integer (not a bool, not 2.5); anything else is a TypeError (broken metadata)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _augment_dict(value: Any) -> dict[str, float] | None:
    """``support_augment`` as {field: number}; a non-object or a non-number value is a TypeError (broken metadata)."""
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value.values()):
        raise TypeError(f"support_augment must be an object of numbers, got {value!r}")
    return {str(k): float(v) for k, v in value.items()}


def _check_augment(augment: dict[str, float], source: str) -> None:
    """Every ``support_augment`` key is an ``AugmentConfig`` field with a value in its recipe range
    (``toolkit.config_ranges``), and the affine scales are ordered."""
    from toolkit.config import AugmentConfig
    from toolkit.config_ranges import range_of

    known = {f.name for f in fields(AugmentConfig)}
    for key, value in augment.items():
        allowed = range_of(f"augment.{key}")
        if key not in known or (allowed is not None and not allowed.contains(value)):
            valid = f"must be {allowed.describe()}" if key in known and allowed else "is not an augmentation setting"
            raise ToolkitError(f"{source}: metadata key support_augment.{key} is {value}; {valid}")
    scale = augment.get("affine_scale_min", 1.0), augment.get("affine_scale_max", 1.0)
    crop = augment.get("crop_min_scale", 0.2), augment.get("crop_max_scale", 1.0)
    if scale[0] > scale[1] or crop[0] > crop[1]:
        raise ToolkitError(f"{source}: metadata key support_augment has a minimum scale above its maximum "
                           f"(crop {crop[0]}-{crop[1]}, affine {scale[0]}-{scale[1]})")


def _check_ranges(info: ModelInfo, source: str) -> None:
    """Refuse values no model can have: a NaN threshold would silently call every pair "different".

    Raises:
        ToolkitError: naming the first key out of range and what would be valid.
    """
    pre = info.preprocessing
    sizes = {"image_size": pre.image_size, "resize_size": pre.resize_size, "embedding_dim": info.embedding_dim}
    for key, size in sizes.items():
        if not 1 <= size <= MAX_SIZE:
            raise ToolkitError(f"{source}: metadata key {key} is {size}; must be an integer from 1 to {MAX_SIZE}")
    if pre.resize_size < pre.image_size:
        raise ToolkitError(f"{source}: metadata key resize_size {pre.resize_size} is below image_size "
                           f"{pre.image_size}; the centre crop needs resize_size >= image_size")
    if not all(math.isfinite(m) for m in pre.mean):
        raise ToolkitError(f"{source}: metadata key mean {list(pre.mean)} must hold finite numbers")
    if not all(math.isfinite(s) and s > 0 for s in pre.std):
        raise ToolkitError(f"{source}: metadata key std {list(pre.std)} must hold finite numbers above 0 "
                           "(the input is divided by it)")
    if info.support_augment is not None:
        _check_augment(info.support_augment, source)
    if not 0 <= info.support_tta <= MAX_SUPPORT_VIEWS:
        raise ToolkitError(f"{source}: metadata key support_tta is {info.support_tta}; must be an integer from 0 to "
                           f"{MAX_SUPPORT_VIEWS}")
    for key, value in (("threshold", info.thresholds.pair), ("unknown_threshold", info.thresholds.unknown)):
        if value is not None and not (math.isfinite(value) and -1.0 <= value <= 1.0):
            raise ToolkitError(f"{source}: metadata key {key} is {value}; a cosine threshold must be a finite "
                               "number in [-1, 1] (or null for none)")


def eval_thresholds(folder: Path) -> Thresholds:
    """The thresholds of ``folder/eval.json``; None where absent.

    Reads ``calibration.threshold_eer`` and ``calibration.unknown_threshold``; an older
    ``eval.json`` without ``calibration`` gives its ``verification.threshold`` (with a warning: it
    was chosen on the test split) and no unknown threshold. Whose weights they belong to is
    checked by ``exporters.eval_link``.

    Raises:
        ToolkitError: an incomplete ``eval.json``, naming the missing key.
    """
    path = RunFolder(folder).eval_json
    report = read_eval_report(path)
    if report is None:
        return Thresholds()
    warn_uncalibrated(report, path)
    return stored_thresholds(report)


def info_from_checkpoint(ckpt: Checkpoint, thresholds: Thresholds | None = None) -> ModelInfo:
    """Metadata of a loaded ``Checkpoint``.

    Args:
        ckpt: the checkpoint.
        thresholds: default: those of the ``eval.json`` beside it when it was computed on these
            weights (``exporters.eval_link.checkpoint_thresholds``).

    Raises:
        ToolkitError: no preprocessing recorded, or a threshold out of [-1, 1].
    """
    pre = ckpt.preprocessing
    if pre is None:
        raise ToolkitError(f"{ckpt.path}: the checkpoint records no preprocessing; it cannot be exported")
    path = Path(ckpt.path or RunFolder.CHECKPOINT)
    tuning = ckpt.recipe.finetune
    info = ModelInfo(pre, ckpt.embedding_dim, checkpoint_thresholds(ckpt) if thresholds is None else thresholds,
                     kind=ckpt.kind, checkpoint=str(path), features=ckpt.features, support_tta=tuning.support_tta,
                     support_augment={k: float(v) for k, v in asdict(tuning.augment).items()})
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


_PROP_KEYS = {"format", "input_name", "output_name", "image_size", "resize_size", "channels", "mean", "std",
              "embedding_dim", "threshold", "kind", "toolkit_version", "opset", "checkpoint", "unknown_threshold",
              "features", "input_shape", "openvino_bf16_min_cosine", "support_tta", "support_augment"}  # every key ``ModelInfo.to_dict`` writes
