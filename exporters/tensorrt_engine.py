"""TensorRT engine build (ONNX -> ``encoder.engine``) and a TensorRT inference backend.

Written against TensorRT 10 and 11's Python API. The difference that matters here:
TensorRT 11 only builds strongly typed networks (the FP16 builder flag and trtexec's
``--fp16`` are gone), so for FP16 the ONNX itself is first converted to mixed precision
(``convert_to_mixed_fp16``), keeping the l2 normalisation in fp32 because its sum of squares
overflows fp16. On TensorRT 10 the FP16 builder flag is set instead, and the layers after the
last convolution/matmul (the normalisation) are pinned to fp32.

``tensorrt`` is imported inside functions only: this module must import on machines without
it, and the tests around it run on CPU.
"""

from __future__ import annotations

import json
import shlex
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnx
import torch

from toolkit.engine.run_folder import atomic_write
from toolkit.errors import ToolkitError

INPUT_NAME = "images"
# Ops of F.normalize as the torch exporters emit it (ReduceL2/Clip/Expand/Div from dynamo;
# Pow/ReduceSum/Sqrt/Max from the older TorchScript exporter): kept fp32 in the fp16 model.
NORMALISATION_OPS = ("ReduceL2", "Div", "ReduceSumSquare", "Sqrt", "Clip", "Max", "Expand", "Pow", "ReduceSum")
MiB = 2**20


def tensorrt_unavailable_reason() -> str | None:
    """None when TensorRT can run here, else a one-line reason why not."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the Python package `tensorrt` is not installed"
    except Exception as e:  # a broken install (e.g. libnvinfer missing) raises OSError and friends
        return f"the Python package `tensorrt` cannot be imported ({type(e).__name__}: {e})"
    if not torch.cuda.is_available():
        return "no CUDA device is available"
    return None


def _write_bytes_atomic(path: Path, data: bytes | memoryview) -> None:
    """``toolkit.engine.run_folder.atomic_write``: no half-written file ever stays under ``path``."""
    with atomic_write(path, "wb") as handle:
        handle.write(data)


def onnx_input_chw(onnx_path: str | Path, input_name: str = INPUT_NAME) -> tuple[int, int, int]:
    """C, H, W of the ONNX input ``input_name``; the batch dimension must be dynamic.

    Raises:
        ToolkitError: no such file or input, dynamic C/H/W, or a fixed batch size.
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ToolkitError(f"{onnx_path}: no such ONNX file")
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    inputs = {i.name: i for i in graph.input}
    if input_name not in inputs:
        raise ToolkitError(f"{onnx_path}: no input named {input_name!r}; inputs are {sorted(inputs)}")
    dims = inputs[input_name].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in dims]
    if len(shape) != 4 or not all(isinstance(d, int) and d > 0 for d in shape[1:]):
        raise ToolkitError(
            f"{onnx_path}: input {input_name!r} has shape {shape}; expected [batch, C, H, W] with fixed C, H, W"
        )
    if isinstance(shape[0], int) and shape[0] > 0:
        raise ToolkitError(
            f"{onnx_path}: input {input_name!r} has a fixed batch of {shape[0]}; re-export with a dynamic batch"
        )
    return shape[1], shape[2], shape[3]


def _restore_fp32_outputs(original: onnx.ModelProto, model: onnx.ModelProto) -> None:
    """Puts back float32 graph outputs that ``convert_float_to_float16`` turned into float16.

    With ``keep_io_types=True`` the converter still retypes an output whose producer is in the
    block list (it inserts a fp16 Cast after the blocked node and retypes the graph output):
    here the final ``Div`` of the normalisation. The fix turns that Cast into an Identity (or,
    if other nodes read the fp16 tensor, adds a Cast from the fp32 tensor), so the output is
    fp32 again and no fp16 rounding happens after the normalisation.
    """
    was_fp32 = {o.name for o in original.graph.output if o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    for output in model.graph.output:
        if output.name not in was_fp32 or output.type.tensor_type.elem_type == onnx.TensorProto.FLOAT:
            continue
        producer = next(n for n in model.graph.node if output.name in n.output)
        is_fp16_cast = producer.op_type == "Cast" and producer.attribute[0].i == onnx.TensorProto.FLOAT16
        output.type.tensor_type.elem_type = onnx.TensorProto.FLOAT
        if is_fp16_cast and not any(output.name in n.input for n in model.graph.node):
            producer.op_type = "Identity"  # the usual case: pass the fp32 result straight through
            del producer.attribute[:]
            continue
        fp16_name = f"{output.name}_fp16"
        producer.output[list(producer.output).index(output.name)] = fp16_name
        for node in model.graph.node:  # other readers keep reading the fp16 tensor
            for i, name in enumerate(node.input):
                if name == output.name:
                    node.input[i] = fp16_name
        source = producer.input[0] if is_fp16_cast else fp16_name
        name = f"{output.name}_to_fp32"
        cast = onnx.helper.make_node("Cast", [source], [output.name], to=onnx.TensorProto.FLOAT, name=name)
        model.graph.node.append(cast)


def convert_to_mixed_fp16(onnx_path: str | Path, out_path: str | Path) -> Path:
    """Converts an fp32 ONNX encoder to fp16, keeping I/O and the l2 normalisation in fp32.

    Uses onnxconverter-common's ``convert_float_to_float16(keep_io_types=True,
    op_block_list=NORMALISATION_OPS)``; TensorRT 11 then builds it strongly typed. Note the
    converter clamps small constants to 1e-7, so F.normalize's eps of 1e-12 becomes 1e-7
    (irrelevant for non-zero embeddings).

    Returns:
        ``out_path``, written atomically.

    Raises:
        ToolkitError: a missing ONNX file or one already in fp16.
    """
    from onnxconverter_common import float16

    onnx_path, out_path = Path(onnx_path), Path(out_path)
    if not onnx_path.is_file():
        raise ToolkitError(f"{onnx_path}: no such ONNX file")
    original = onnx.load(str(onnx_path))
    try:
        with warnings.catch_warnings():  # the eps clamp above, expected and documented
            warnings.filterwarnings("ignore", message=r"the float32 number .* will be truncated")
            model = float16.convert_float_to_float16(
                onnx.ModelProto.FromString(original.SerializeToString()),
                keep_io_types=True,
                op_block_list=list(NORMALISATION_OPS),
            )
    except ValueError as e:  # raised for a model that is already fp16
        raise ToolkitError(f"{onnx_path}: cannot convert to fp16: {' '.join(str(e).split())}") from e
    _restore_fp32_outputs(original, model)
    _write_bytes_atomic(out_path, model.SerializeToString())
    return out_path


def trtexec_command(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    chw: tuple[int, int, int],
    min_batch: int,
    opt_batch: int,
    max_batch: int,
    workspace_bytes: int,
    timing_cache_path: str | Path | None,
    fp16: bool,
    trt_major: int,
    input_name: str = INPUT_NAME,
) -> str:
    """The ``trtexec`` command line equivalent to ``build_engine``'s Python build.

    ``--fp16`` is added only for TensorRT 10; on 11 it no longer exists and ``onnx_path``
    should already be the mixed-precision model. The workspace is written in whole MiB.
    """
    c, h, w = chw

    def shape(batch: int) -> str:
        return f"{input_name}:{batch}x{c}x{h}x{w}"

    args = [
        "trtexec",
        f"--onnx={onnx_path}",
        f"--saveEngine={engine_path}",
        f"--minShapes={shape(min_batch)}",
        f"--optShapes={shape(opt_batch)}",
        f"--maxShapes={shape(max_batch)}",
        f"--memPoolSize=workspace:{max(1, workspace_bytes // MiB)}M",
    ]
    if timing_cache_path is not None:
        args.append(f"--timingCacheFile={timing_cache_path}")
    if fp16 and trt_major < 11:
        args.append("--fp16")
    return shlex.join(args)


def _pin_normalisation_fp32(trt: ModuleType, network: Any) -> list[str]:
    """TensorRT 10 + FP16 flag: forces the layers after the last conv/matmul to fp32.

    Those layers are the embedding's l2 normalisation (plus a bias add); in fp16 its sum of
    squares can overflow. Shape and constant layers are left alone.

    Returns:
        The names of the pinned layers.
    """
    compute = {trt.LayerType.CONVOLUTION, trt.LayerType.MATRIX_MULTIPLY}
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    last = max((i for i, layer in enumerate(layers) if layer.type in compute), default=-1)
    pinned = []
    for layer in layers[last + 1 :]:
        if layer.type in (trt.LayerType.CONSTANT, trt.LayerType.SHAPE):
            continue
        if all(layer.get_output(j).dtype == trt.float32 for j in range(layer.num_outputs)):
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                layer.set_output_type(j, trt.float32)
            pinned.append(layer.name)
    return pinned


def _tensor_info(tensor: Any) -> dict[str, object]:
    """Name, shape (-1 for dynamic) and dtype of a ``tensorrt.ITensor``, for engine.json."""
    return {"name": tensor.name, "shape": list(tensor.shape), "dtype": str(tensor.dtype).split(".")[-1].lower()}


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    *,
    min_batch: int = 1,
    opt_batch: int,
    max_batch: int,
    fp16: bool,
    workspace_bytes: int,
    timing_cache_path: str | Path | None = None,
) -> dict[str, object]:
    """Builds a TensorRT engine from the encoder ONNX and writes ``engine.json`` beside it.

    One optimization profile covers input ``images`` from ``min_batch`` to ``max_batch``
    (tuned for ``opt_batch``); C, H, W come from the ONNX. The timing cache is loaded when the
    file exists (and matches this GPU/TensorRT) and saved after the build, which makes
    rebuilds much faster. Also written beside the engine: ``trtexec.sh`` with the equivalent
    command and, for FP16 on TensorRT >= 11, ``encoder.fp16.onnx``.

    Returns:
        The ``engine.json`` content: versions, GPU, I/O, profile, precision, build seconds and
        the trtexec command.

    Raises:
        ToolkitError: bad batch sizes or workspace, a bad ONNX, TensorRT unavailable, a failed
            parse or build.
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise ToolkitError(
            f"batch sizes must satisfy 1 <= min <= opt <= max, got min={min_batch} opt={opt_batch} max={max_batch}"
        )
    if workspace_bytes < MiB:
        raise ToolkitError(f"workspace_bytes={workspace_bytes}: must be at least 1 MiB ({MiB})")
    chw = onnx_input_chw(onnx_path)
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        raise ToolkitError(f"cannot build a TensorRT engine from {onnx_path}: {reason}")
    import tensorrt as trt

    trt_major = int(trt.__version__.split(".")[0])
    strongly_typed_fp16 = fp16 and trt_major >= 11
    source = onnx_path
    if strongly_typed_fp16:
        source = convert_to_mixed_fp16(onnx_path, engine_path.parent / "encoder.fp16.onnx")

    start = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode; 11 is always strongly typed
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(source)):
        first = parser.get_error(0).desc() if parser.num_errors else "unknown error"
        raise ToolkitError(f"{source}: TensorRT cannot parse the ONNX: {' '.join(str(first).split())}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    pinned: list[str] = []
    if fp16 and not strongly_typed_fp16:
        config.set_flag(trt.BuilderFlag.FP16)
        pinned = _pin_normalisation_fp32(trt, network)
        config.set_flag(trt.BuilderFlag.PREFER_PRECISION_CONSTRAINTS)
    profile = builder.create_optimization_profile()
    shapes = {name: (batch, *chw) for name, batch in (("min", min_batch), ("opt", opt_batch), ("max", max_batch))}
    profile.set_shape(INPUT_NAME, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)

    cache_path = Path(timing_cache_path) if timing_cache_path is not None else None
    cache_loaded = False
    if cache_path is not None:
        data = cache_path.read_bytes() if cache_path.is_file() else b""
        cache = config.create_timing_cache(data)
        # A cache from another GPU or TensorRT version is refused; start from an empty one then.
        cache_loaded = bool(data) and config.set_timing_cache(cache, ignore_mismatch=False)
        if not cache_loaded:
            config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ToolkitError(f"{source}: TensorRT failed to build an engine (see the TensorRT log above)")
    build_seconds = time.perf_counter() - start
    _write_bytes_atomic(engine_path, memoryview(serialized))
    if cache_path is not None:
        _write_bytes_atomic(cache_path, memoryview(config.get_timing_cache().serialize()))

    command = trtexec_command(
        source, engine_path, chw=chw, min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch,
        workspace_bytes=workspace_bytes, timing_cache_path=cache_path, fp16=fp16, trt_major=trt_major,
    )
    info: dict[str, object] = {
        "tensorrt_version": trt.__version__,
        "gpu": torch.cuda.get_device_name(torch.cuda.current_device()),
        "onnx": str(onnx_path),
        "built_from": str(source),
        "engine": str(engine_path),
        "inputs": [_tensor_info(network.get_input(i)) for i in range(network.num_inputs)],
        "outputs": [_tensor_info(network.get_output(i)) for i in range(network.num_outputs)],
        "profile": {"input": INPUT_NAME, **{k: list(v) for k, v in shapes.items()}},
        "precision": "fp16" if fp16 else "fp32",
        "precision_mode": (
            "strongly typed mixed fp16 ONNX" if strongly_typed_fp16 else "FP16 builder flag" if fp16 else "fp32"
        ),
        "fp32_pinned_layers": pinned,
        "workspace_bytes": workspace_bytes,
        "timing_cache": str(cache_path) if cache_path is not None else None,
        "timing_cache_loaded": cache_loaded,
        "build_seconds": round(build_seconds, 3),
        "trtexec": command,
    }
    _write_bytes_atomic(engine_path.parent / "engine.json", (json.dumps(info, indent=2) + "\n").encode())
    script = engine_path.parent / "trtexec.sh"
    _write_bytes_atomic(script, f"#!/bin/sh\n# The trtexec equivalent of this build.\n{command}\n".encode())
    script.chmod(0o755)
    return info


class TensorRTEncoder:
    """Runs a serialized TensorRT engine: ``embed(images [N,C,H,W] float32) -> [N,D] float32``.

    Device buffers are torch CUDA tensors (no pycuda); inference is ``execute_async_v3`` on a
    torch CUDA stream. Batches larger than the profile's max batch are run in chunks.

    Attributes:
        input_name, output_name: the engine's I/O tensor names.
        chw: the input's C, H, W.
        max_batch: the profile's largest batch.
    """

    def __init__(self, engine_path: str | Path, device: int = 0) -> None:
        engine_path = Path(engine_path)
        reason = tensorrt_unavailable_reason()
        if reason is not None:
            raise ToolkitError(f"cannot run the TensorRT engine {engine_path}: {reason}")
        if not engine_path.is_file():
            raise ToolkitError(f"{engine_path}: no such engine file")
        import tensorrt as trt

        self.device = torch.device("cuda", device)
        torch.cuda.set_device(self.device)  # TensorRT uses the current device's primary context
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise ToolkitError(
                f"{engine_path}: TensorRT {trt.__version__} cannot load this engine "
                "(built by another TensorRT version or for another GPU?); rebuild it"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise ToolkitError(f"{engine_path}: expected one input and one output, got {inputs} and {outputs}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        dtypes = {trt.float32: torch.float32, trt.float16: torch.float16}
        in_dtype = self.engine.get_tensor_dtype(self.input_name)
        out_dtype = self.engine.get_tensor_dtype(self.output_name)
        if in_dtype not in dtypes or out_dtype not in dtypes:
            raise ToolkitError(
                f"{engine_path}: unsupported I/O types {in_dtype} and {out_dtype}; expected float32 or float16"
            )
        _, _, max_shape = self.engine.get_tensor_profile_shape(self.input_name, 0)
        self.max_batch = int(max_shape[0])
        self.chw = tuple(int(d) for d in max_shape[1:])
        self.stream = torch.cuda.Stream(self.device)
        # Buffers sized for the largest batch, allocated once; smaller batches use a prefix.
        self.context.set_input_shape(self.input_name, tuple(max_shape))
        out_shape = tuple(self.context.get_tensor_shape(self.output_name))
        self._input = torch.empty(tuple(max_shape), dtype=dtypes[in_dtype], device=self.device)
        self._output = torch.empty(out_shape, dtype=dtypes[out_dtype], device=self.device)
        self.dim = int(out_shape[1])

    def embed(self, images: np.ndarray) -> np.ndarray:
        """Embeddings of a batch: [N, C, H, W] float32 -> [N, D] float32 (l2-normalised by the model)."""
        images = np.asarray(images, dtype=np.float32)
        if images.ndim != 4 or tuple(images.shape[1:]) != self.chw:
            raise ValueError(f"expected images [N, {', '.join(map(str, self.chw))}], got {list(images.shape)}")
        out = np.empty((images.shape[0], self.dim), dtype=np.float32)
        with torch.cuda.stream(self.stream):
            for start in range(0, images.shape[0], self.max_batch):
                chunk = torch.from_numpy(images[start : start + self.max_batch])
                n = chunk.shape[0]
                self._input[:n].copy_(chunk)  # stream-ordered before the engine reads it
                self.context.set_input_shape(self.input_name, (n, *self.chw))
                self.context.set_tensor_address(self.input_name, self._input.data_ptr())
                self.context.set_tensor_address(self.output_name, self._output.data_ptr())
                if not self.context.execute_async_v3(self.stream.cuda_stream):
                    raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log)")
                out[start : start + n] = self._output[:n].float().cpu().numpy()  # synchronises
        return out
