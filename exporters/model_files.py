"""Which file runs a model: a model path (a file, a run folder or an export folder) and a backend -> the file.

The folders' file names are their owners' (``RunFolder``, ``ExportFolder``); this module only
says which of them each backend reads.
"""

from __future__ import annotations

from pathlib import Path

from exporters.export_folder import ExportFolder
from toolkit.engine.run_folder import RunFolder
from toolkit.errors import ToolkitError

BACKENDS = ("torch", "onnx", "openvino", "tensorrt")
ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def resolve_model(model: str | Path, backend: str | None = None) -> tuple[str, Path]:
    """Which backend runs ``model`` and from which file.

    By suffix: ``.onnx`` -> onnx, ``.engine``/``.plan``/``.trt`` -> tensorrt, anything else
    (``.pt``, a run folder) -> torch (``scoring.embedding.default_backend`` may pick openvino). A
    folder resolves to its ``checkpoint.pt`` (a run), else its ``encoder.onnx`` (an export folder);
    with ``backend`` given, to the file that backend needs (``export/encoder.onnx``, ``.engine``).

    Raises:
        ToolkitError: an unknown backend, a missing path, or a folder without that model.
    """
    path = Path(model)
    if backend is not None and backend not in BACKENDS:
        raise ToolkitError(f"--backend {backend}: valid are {', '.join(BACKENDS)}")
    if not path.exists():
        raise ToolkitError(f"{path}: no such model (expected a checkpoint .pt, a run folder, an .onnx or a TensorRT .engine)")
    if path.is_dir():
        run, export = RunFolder(path), ExportFolder(path)
        inner = ExportFolder(run.export_dir)  # a run folder's own export
        onnx = [export.onnx, inner.onnx]
        candidates = {"torch": [run.checkpoint], "onnx": onnx, "openvino": onnx, "tensorrt": [export.engine, inner.engine]}
        order = [backend] if backend else ["torch", "onnx"]
        for kind in order:
            for file in candidates[kind]:
                if file.is_file():
                    return kind, file
        named = candidates[order[0]] if backend else [run.checkpoint, export.onnx]
        wanted = " or ".join(p.relative_to(path).as_posix() for p in named)
        hint = "; run toolkit export first" if backend in ("onnx", "openvino", "tensorrt") else ""
        raise ToolkitError(f"{path}: folder has no {wanted}{hint}")
    if backend is not None:
        return backend, path
    suffix = path.suffix.lower()
    return ("onnx" if suffix in ONNX_SUFFIXES else "tensorrt" if suffix in ENGINE_SUFFIXES else "torch"), path
