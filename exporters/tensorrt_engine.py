"""TensorRT engine build (ONNX -> ``encoder.engine``); inference is in ``exporters.tensorrt_runtime``.

Written against TensorRT 10 and 11's Python API. The difference that matters here:
TensorRT 11 only builds strongly typed networks (the FP16 builder flag and trtexec's
``--fp16`` are gone), so for FP16 the ONNX itself is first converted to mixed precision
(``exporters.onnx_fp16.convert_to_mixed_fp16``), keeping the l2 normalisation in fp32 because its sum of squares
overflows fp16. On TensorRT 10 the FP16 builder flag is set instead, and the layers after the
last convolution/matmul (the normalisation) are pinned to fp32.

``tensorrt`` is imported inside functions only: this module must import on machines without
it, and the tests around it run on CPU.
"""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from exporters.export_folder import ExportFolder
from exporters.metadata import INPUT_NAME
from exporters.onnx_fp16 import convert_to_mixed_fp16, onnx_input_chw
from toolkit.errors import ToolkitError
from toolkit.io import write_bytes_atomic

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
        source = convert_to_mixed_fp16(onnx_path, ExportFolder(engine_path.parent).fp16_onnx)

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
    write_bytes_atomic(engine_path, memoryview(serialized))
    if cache_path is not None:
        write_bytes_atomic(cache_path, memoryview(config.get_timing_cache().serialize()))

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
    write_bytes_atomic(ExportFolder(engine_path.parent).engine_json, (json.dumps(info, indent=2) + "\n").encode())
    script = ExportFolder(engine_path.parent).trtexec
    write_bytes_atomic(script, f"#!/bin/sh\n# The trtexec equivalent of this build.\n{command}\n".encode())
    script.chmod(0o755)
    return info
