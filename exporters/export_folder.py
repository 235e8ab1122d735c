"""``ExportFolder``: the file names of one export, as ``RunFolder`` owns a run's; ``TritonModel``: those of a
model in a Triton Inference Server repository.

An export folder holds one model and what was derived from it::

    encoder.onnx                 the fp32 model (metadata inside)
    encoder.json                 the same metadata, beside it
    encoder.rejected.onnx        a graph that failed the parity gate
    encoder.int8.onnx            the int8 model (--int8)
    encoder.int8.onnx.rejected   an int8 model that failed its gate
    encoder.engine, engine.json, trtexec.sh, encoder.fp16.onnx   the TensorRT build (--trt)

Everything but ``encoder.onnx`` and ``encoder.json`` is derived from one ``encoder.onnx``: once a
new one is in place, every derived file of the previous export is stale (an old
``encoder.int8.onnx`` beside a new ``encoder.onnx`` would be picked up by ``toolkit score``), so
``remove_derived`` deletes them before the new export writes its own. ``timing.cache`` is
TensorRT's cache of kernel timings, valid for any network on the same GPU, and is kept. While the
parity gate checks a new graph it lies beside the old model under a temporary name (``staged_onnx``).

A Triton model repository (``--triton REPO``, Triton's own convention)::

    REPO/<name>/config.pbtxt  and  REPO/<name>/1/model.onnx    ONNX Runtime
    REPO/<name>_trt/config.pbtxt  and  REPO/<name>_trt/1/model.plan    TensorRT (with --trt)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.io import temp_path


class ExportFolder:
    """The files of one export in ``path``."""

    ONNX = "encoder.onnx"
    JSON = "encoder.json"
    REJECTED_ONNX = "encoder.rejected.onnx"
    INT8 = "encoder.int8.onnx"
    INT8_REJECTED = "encoder.int8.onnx.rejected"
    ENGINE = "encoder.engine"
    ENGINE_JSON = "engine.json"
    TRTEXEC = "trtexec.sh"
    FP16_ONNX = "encoder.fp16.onnx"
    TIMING_CACHE = "timing.cache"
    DERIVED = (REJECTED_ONNX, INT8, INT8_REJECTED, ENGINE, ENGINE_JSON, TRTEXEC, FP16_ONNX)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"ExportFolder({str(self.path)!r})"

    @classmethod
    def of(cls, model: str | Path) -> ExportFolder:
        """The export folder holding the model file ``model`` (its metadata lies beside it)."""
        return cls(Path(model).parent)

    @property
    def onnx(self) -> Path:
        return self.path / self.ONNX

    @property
    def staged_onnx(self) -> Path:
        """The new graph until the parity gate passes it (a temporary name beside ``onnx``)."""
        return temp_path(self.onnx)

    @property
    def json(self) -> Path:
        return self.path / self.JSON

    @property
    def rejected_onnx(self) -> Path:
        return self.path / self.REJECTED_ONNX

    @property
    def int8(self) -> Path:
        return self.path / self.INT8

    @property
    def int8_rejected(self) -> Path:
        return self.path / self.INT8_REJECTED

    @property
    def engine(self) -> Path:
        return self.path / self.ENGINE

    @property
    def engine_json(self) -> Path:
        return self.path / self.ENGINE_JSON

    @property
    def trtexec(self) -> Path:
        return self.path / self.TRTEXEC

    @property
    def fp16_onnx(self) -> Path:
        return self.path / self.FP16_ONNX

    @property
    def timing_cache(self) -> Path:
        return self.path / self.TIMING_CACHE

    def derived(self) -> list[Path]:
        """The derived files (see the module docstring) that exist now."""
        return [self.path / name for name in self.DERIVED if (self.path / name).exists()]

    def remove_derived(self) -> list[Path]:
        """Delete every derived file of an earlier export; returns what was removed.

        Raises:
            ToolkitError: a file could not be removed (the export stops rather than leave it
                beside the new model).
        """
        removed = []
        for path in self.derived():
            try:
                path.unlink()
            except IsADirectoryError:
                raise ToolkitError(f"{path}: a folder where the export writes a file; move it away") from None
            except OSError as exc:
                raise ToolkitError(f"{path}: left by an earlier export and cannot be removed "
                                   f"({exc.strerror or type(exc).__name__}); remove it and export again") from None
            removed.append(path)
        return removed


@dataclass(frozen=True)
class TritonModel:
    """One model of a Triton model repository: ``repo/name/config.pbtxt`` and ``repo/name/1/<model file>``."""

    repo: Path
    name: str
    platform: str  # "onnxruntime_onnx" or "tensorrt_plan"

    CONFIG = "config.pbtxt"
    VERSION = "1"
    MODEL_FILES = {"onnxruntime_onnx": "model.onnx", "tensorrt_plan": "model.plan"}
    TRT_SUFFIX = "_trt"

    @classmethod
    def onnx(cls, repo: str | Path, name: str) -> TritonModel:
        return cls(Path(repo), name, "onnxruntime_onnx")

    @classmethod
    def tensorrt(cls, repo: str | Path, name: str) -> TritonModel:
        """The TensorRT model beside the ONNX model ``name``: ``<name>_trt``."""
        return cls(Path(repo), name + cls.TRT_SUFFIX, "tensorrt_plan")

    @property
    def path(self) -> Path:
        return self.repo / self.name

    @property
    def config(self) -> Path:
        return self.path / self.CONFIG

    @property
    def model_file(self) -> Path:
        return self.path / self.VERSION / self.MODEL_FILES[self.platform]
