"""Inference backends behind one interface: ``embed(images) -> embeddings``.

Every backend takes the exported graph's contract, ``images`` [N, C, S, S] float32 already
normalised (from the model's metadata, once, in ``scoring.images``), and returns [N, D] float32
unit vectors; they differ only in how they run:

* ``TorchBackend``: a checkpoint in PyTorch; ``precision="auto"`` = bf16 autocast where the CPU has
  native bf16, channels_last; ``"fp32"`` = eager fp32 NCHW, the reference for the others.
* ``OnnxBackend``: ``encoder.onnx`` (or ``.int8.onnx``) on ONNX Runtime, CUDA (IOBinding) when the
  provider is present, else the CPU; the provider that really runs is read back from the session.
* ``OpenVinoBackend``: the same ``encoder.onnx`` on OpenVINO's CPU plugin, bf16 where the CPU has it.
* ``TensorRTBackend``: a serialized engine (``exporters.tensorrt_runtime.TensorRTEncoder``).

``open_backend`` picks one by the model path (``exporters.model_files.resolve_model``); its ``backend`` argument
overrides.
"""

from __future__ import annotations

import abc
from pathlib import Path

import numpy as np
import torch
from torch import nn

from exporters import metadata
from exporters.export_folder import ExportFolder
from exporters.metadata import INPUT_NAME, OUTPUT_NAME, ModelInfo
from exporters.model_files import resolve_model
from toolkit.console import warn
from toolkit.errors import ToolkitError

class Backend(abc.ABC):
    """One way of running the encoder.

    Attributes:
        name: "torch", "onnx", "openvino" or "tensorrt".
        info: the model's metadata (input framing, normalisation, threshold).
        description: what really runs, e.g. "onnxruntime 1.32.0, CPUExecutionProvider, 2 threads".
        source: the model file.
    """

    name: str
    info: ModelInfo
    description: str
    source: str

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Embeddings of normalised images: [N, C, S, S] float32 -> [N, D] float32 unit vectors.

        Raises:
            ToolkitError: the images do not have the model's input size, or the model cannot run on them.
        """
        images = np.ascontiguousarray(images, dtype=np.float32)
        if images.ndim != 4 or tuple(images.shape[1:]) != self.info.input_chw:
            want = ", ".join(map(str, self.info.input_chw))
            raise ToolkitError(f"{self.source}: the model takes images [batch, {want}], got {list(images.shape)}")
        if images.shape[0] == 0:
            return np.zeros((0, self.info.embedding_dim), dtype=np.float32)
        try:
            return self._run(images)
        except ToolkitError:
            raise
        except Exception as exc:  # noqa: BLE001 - each runtime has its own error types
            reason = " ".join(str(exc).split())[:240]
            raise ToolkitError(
                f"{self.source}: the model cannot run on input {list(images.shape)} ({type(exc).__name__}: {reason})"
            ) from None

    @abc.abstractmethod
    def _run(self, images: np.ndarray) -> np.ndarray:
        """The backend's own inference on a validated, contiguous float32 batch."""


class TorchBackend(Backend):
    """A PyTorch encoder: fastest correct settings by default, plain fp32 eager on request."""

    name = "torch"

    def __init__(self, encoder: nn.Module, info: ModelInfo, *, precision: str = "auto", device: str = "cpu",
                 threads: int | None = None, source: str = "") -> None:
        from toolkit.engine.precision import autocast_context, autocast_dtype, describe

        if precision not in ("auto", "bf16", "fp32"):
            raise ToolkitError(f"precision {precision!r}: valid are auto, bf16, fp32")
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   "cpu" if device == "auto" else device)
        self.dtype = autocast_dtype(precision, self.device)
        self.autocast = autocast_context(self.device, self.dtype)
        # channels_last lets oneDNN / cuDNN pick their fast NHWC convolutions; "fp32" is the eager reference.
        self.memory_format = torch.contiguous_format if precision == "fp32" else torch.channels_last
        self.model = encoder.eval().to(self.device, memory_format=self.memory_format)
        self.info, self.source = info, source or info.checkpoint
        layout = "NCHW" if precision == "fp32" else "channels_last"
        self.description = f"torch {torch.__version__}, {self.device.type}, {describe(self.dtype)}, {layout}, " \
                           f"{torch.get_num_threads()} threads"

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs: object) -> TorchBackend:
        from toolkit.engine.checkpoint import Checkpoint

        ckpt = Checkpoint.load(path)
        info = metadata.info_from_checkpoint(ckpt)
        return cls(ckpt.encoder(), info, source=str(ckpt.path), **kwargs)  # type: ignore[arg-type]

    @torch.inference_mode()
    def _run(self, images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(images).to(self.device).contiguous(memory_format=self.memory_format)
        with self.autocast():
            out = self.model(x)
        return out.float().cpu().numpy()


def ort_session_options(threads: int | None):  # noqa: ANN201 - onnxruntime.SessionOptions
    """ONNX Runtime session options for the encoder on the CPU (and CUDA): ``ORT_ENABLE_ALL`` (NCHWc
    blocked convolutions on x86), set explicitly; lower levels (``benchmarks/inference.py``) were no faster."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads or 0  # 0 = one per physical core
    options.inter_op_num_threads = 1  # a single chain of convolutions: no parallel branches
    options.log_severity_level = 3  # errors only
    return options


class OnnxBackend(Backend):
    """An ONNX model on ONNX Runtime: CUDA when available (IOBinding), else the CPU."""

    name = "onnx"

    def __init__(self, path: str | Path, *, threads: int | None = None, device: str = "auto",
                 info: ModelInfo | None = None, options: object | None = None) -> None:
        import onnxruntime as ort

        from exporters.onnx_export import read_info

        path = Path(path)
        self.info = info or read_info(path)
        self.source = str(path)
        available = ort.get_available_providers()
        if device.startswith("cuda") and "CUDAExecutionProvider" not in available:
            raise ToolkitError(f"device {device}: this onnxruntime has no CUDA provider (has {', '.join(available)})")
        want_cuda = device != "cpu" and "CUDAExecutionProvider" in available
        device_id = int(device.split(":")[1]) if device.startswith("cuda:") else 0
        providers = ([("CUDAExecutionProvider", {"device_id": device_id})] if want_cuda else []) + ["CPUExecutionProvider"]
        try:
            options = options or ort_session_options(threads)
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime's own exception types
            reason = " ".join(str(exc).split())[:200]
            raise ToolkitError(f"{path}: ONNX Runtime cannot load it ({type(exc).__name__}: {reason})") from None
        self.provider = self.session.get_providers()[0]  # what really runs, not what was asked
        if want_cuda and self.provider != "CUDAExecutionProvider":
            warn(f"{path}: the CUDA provider did not load; running on {self.provider}")
        self.device_id = device_id
        self._check_io(path)
        where = "GPU, IOBinding" if self.on_cuda else f"{threads} threads" if threads else "one thread per core"
        self.description = f"onnxruntime {ort.__version__}, {self.provider}, {where}"

    @property
    def on_cuda(self) -> bool:
        return self.provider == "CUDAExecutionProvider"

    def _check_io(self, path: Path) -> None:
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if [i.name for i in inputs] != [INPUT_NAME] or [o.name for o in outputs] != [OUTPUT_NAME]:
            raise ToolkitError(f"{path}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, "
                               f"got {[i.name for i in inputs]} -> {[o.name for o in outputs]}")
        shape = inputs[0].shape
        if len(shape) != 4 or isinstance(shape[0], int) or list(shape[1:]) != list(self.info.input_chw):
            want = ", ".join(map(str, self.info.input_chw))
            raise ToolkitError(f"{path}: its input is {shape}, but its metadata needs [batch, {want}] with a dynamic batch")
        width = outputs[0].shape[-1] if outputs[0].shape else None
        if not isinstance(width, int):  # a symbolic width: ask the graph itself, on one blank image
            blank = np.zeros((1, *self.info.input_chw), dtype=np.float32)
            try:
                width = int(self.session.run([OUTPUT_NAME], {INPUT_NAME: blank})[0].shape[-1])
            except Exception:  # noqa: BLE001 - a graph that cannot run fails with its reason in embed()
                return
        if width != self.info.embedding_dim:
            raise ToolkitError(f"{path}: the graph outputs {width}-dim embeddings but its metadata says embedding_dim "
                               f"{self.info.embedding_dim}; re-export the model with toolkit export")

    def _run(self, images: np.ndarray) -> np.ndarray:
        if not self.on_cuda:
            return self.session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]
        import onnxruntime as ort

        binding = self.session.io_binding()
        binding.bind_ortvalue_input(INPUT_NAME, ort.OrtValue.ortvalue_from_numpy(images, "cuda", self.device_id))
        binding.bind_output(OUTPUT_NAME, "cuda", self.device_id)  # allocated on the GPU by ORT
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]


class OpenVinoBackend(Backend):
    """An ONNX model on OpenVINO's CPU plugin (``precision="auto"``: bf16 where the CPU has it)."""

    name = "openvino"

    def __init__(self, path: str | Path, *, threads: int | None = None, precision: str = "auto",
                 info: ModelInfo | None = None) -> None:
        from exporters.onnx_export import read_info
        from exporters.openvino_runtime import OpenVinoEncoder

        self.info = info or read_info(path)
        self.source = str(path)
        self.encoder = OpenVinoEncoder(path, precision=precision, threads=threads)
        self.description = f"OpenVINO {self.encoder.version}, CPU, {self.encoder.precision}, {self.encoder.threads} threads"
        width = self.encoder.output_width()
        if width is not None and width != self.info.embedding_dim:
            raise ToolkitError(f"{path}: the graph outputs {width}-dim embeddings but its metadata says embedding_dim "
                               f"{self.info.embedding_dim}; re-export the model with toolkit export")

    def _run(self, images: np.ndarray) -> np.ndarray:
        return self.encoder.run(images)


class TensorRTBackend(Backend):
    """A TensorRT engine; its metadata comes from ``encoder.json`` in the same folder."""

    name = "tensorrt"

    def __init__(self, path: str | Path, *, info: ModelInfo | None = None) -> None:
        from exporters.tensorrt_runtime import TensorRTEncoder

        path = Path(path)
        beside = ExportFolder.of(path).json
        if info is None and not beside.is_file():
            raise ToolkitError(f"{path}: no encoder.json beside the engine; it holds the input size and normalisation")
        self.info = info or metadata.read_json(beside)
        self.source = str(path)
        self.encoder = TensorRTEncoder(path)
        if tuple(self.encoder.chw) != self.info.input_chw:
            raise ToolkitError(f"{path}: the engine takes {list(self.encoder.chw)} but encoder.json says "
                               f"{list(self.info.input_chw)}")
        import tensorrt as trt

        self.description = f"TensorRT {trt.__version__}, {torch.cuda.get_device_name(self.encoder.device)}, " \
                           f"max batch {self.encoder.max_batch}"

    def _run(self, images: np.ndarray) -> np.ndarray:
        return self.encoder.embed(images)


def open_backend(model: str | Path, backend: str | None = None, *, threads: int | None = None,
                 precision: str = "auto", device: str = "auto") -> Backend:
    """The backend for ``model`` (see ``resolve_model``), ready to ``embed``.

    Raises:
        ToolkitError: a missing model, a file that is not a toolkit model, an unavailable runtime.
    """
    kind, path = resolve_model(model, backend)
    if kind == "openvino" and device.startswith("cuda"):
        raise ToolkitError(f"--backend openvino runs on the CPU; for {device} use --backend onnx or torch")
    if kind == "onnx":
        return OnnxBackend(path, threads=threads, device=device)
    if kind == "openvino":
        return OpenVinoBackend(path, threads=threads, precision=precision)
    if kind == "tensorrt":
        return TensorRTBackend(path)
    return TorchBackend.from_checkpoint(path, precision=precision, device=device, threads=threads)
