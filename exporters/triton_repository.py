"""A Triton Inference Server model repository for the exported encoder.

Layout (Triton's model repository convention, file names owned by ``exporters.export_folder.TritonModel``)::

    REPO/<name>/config.pbtxt        platform onnxruntime_onnx
    REPO/<name>/1/model.onnx
    REPO/<name>_trt/config.pbtxt    platform tensorrt_plan (only when a TensorRT engine was built)
    REPO/<name>_trt/1/model.plan

``config.pbtxt`` is a ``ModelConfig`` in the protobuf text format. Its inputs and outputs are
read from the ONNX graph itself: names, element types (``TYPE_FP32`` for float) and dims
without the batch axis (``max_batch_size`` > 0 means Triton adds it). Dynamic batching
groups single requests into the preferred batch sizes. The message is built with Triton's
own schema (``tritonclient.grpc.model_config_pb2``, from the ``serve``/``dev`` extras) when it
is installed; otherwise the same fields are written as text.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import onnx

from exporters.export_folder import TritonModel
from toolkit.errors import ToolkitError
from toolkit.io import atomic_path, write_text_atomic

# ONNX TensorProto element types -> Triton data types.
ONNX_TO_TRITON = {
    onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16", onnx.TensorProto.BFLOAT16: "TYPE_BF16",
    onnx.TensorProto.DOUBLE: "TYPE_FP64", onnx.TensorProto.INT8: "TYPE_INT8", onnx.TensorProto.UINT8: "TYPE_UINT8",
    onnx.TensorProto.INT32: "TYPE_INT32", onnx.TensorProto.INT64: "TYPE_INT64", onnx.TensorProto.BOOL: "TYPE_BOOL",
}
MAX_QUEUE_DELAY_US = 100
INSTANCE_KINDS = {"onnxruntime_onnx": "KIND_AUTO", "tensorrt_plan": "KIND_GPU"}  # where Triton runs each


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output as Triton sees it: name, data type, dims without the batch axis."""

    name: str
    data_type: str
    dims: list[int]


def graph_io(onnx_path: str | Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """The inputs and outputs of an ONNX graph whose first axis is a dynamic batch.

    Raises:
        ToolkitError: a tensor type Triton has no name for, a static batch axis or another dynamic axis.
    """
    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}

    def spec(value: onnx.ValueInfoProto) -> TensorSpec:
        tensor = value.type.tensor_type
        if tensor.elem_type not in ONNX_TO_TRITON:
            raise ToolkitError(f"{onnx_path}: {value.name} has ONNX element type {tensor.elem_type}, unknown to Triton")
        dims = list(tensor.shape.dim)
        if not dims or dims[0].HasField("dim_value"):
            raise ToolkitError(f"{onnx_path}: {value.name} has no dynamic batch axis; export with a dynamic batch")
        if any(not d.HasField("dim_value") for d in dims[1:]):
            raise ToolkitError(f"{onnx_path}: {value.name} has a dynamic axis besides the batch")
        return TensorSpec(value.name, ONNX_TO_TRITON[tensor.elem_type], [d.dim_value for d in dims[1:]])

    return [spec(v) for v in graph.input if v.name not in initializers], [spec(v) for v in graph.output]


def preferred_batch_sizes(max_batch: int) -> list[int]:
    """Powers of two from 8 up to ``max_batch`` (at most four of them, the largest ones)."""
    sizes = [b for b in (8, 16, 32, 64, 128, 256, 512, 1024) if b <= max_batch]
    return (sizes or [max_batch])[-4:]


def model_config_text(name: str, platform: str, max_batch: int, inputs: list[TensorSpec], outputs: list[TensorSpec],
                      instance_kind: str) -> str:
    """``config.pbtxt`` text: via ``tritonclient``'s ``ModelConfig`` when installed, else written directly."""
    preferred = preferred_batch_sizes(max_batch)
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2 as pb
    except ImportError:
        return _config_text(name, platform, max_batch, inputs, outputs, instance_kind, preferred)
    config = pb.ModelConfig(name=name, platform=platform, max_batch_size=max_batch)
    for spec in inputs:
        config.input.add(name=spec.name, data_type=pb.DataType.Value(spec.data_type), dims=spec.dims)
    for spec in outputs:
        config.output.add(name=spec.name, data_type=pb.DataType.Value(spec.data_type), dims=spec.dims)
    config.dynamic_batching.preferred_batch_size.extend(preferred)
    config.dynamic_batching.max_queue_delay_microseconds = MAX_QUEUE_DELAY_US
    config.instance_group.add(count=1, kind=pb.ModelInstanceGroup.Kind.Value(instance_kind))
    return text_format.MessageToString(config)


def _config_text(name: str, platform: str, max_batch: int, inputs: list[TensorSpec], outputs: list[TensorSpec],
                 instance_kind: str, preferred: list[int]) -> str:
    def tensors(field: str, specs: list[TensorSpec]) -> str:
        return "".join(f'{field} {{\n  name: "{s.name}"\n  data_type: {s.data_type}\n'
                       + "".join(f"  dims: {d}\n" for d in s.dims) + "}\n" for s in specs)

    return (f'name: "{name}"\nplatform: "{platform}"\nmax_batch_size: {max_batch}\n'
            + tensors("input", inputs) + tensors("output", outputs)
            + "dynamic_batching {\n" + "".join(f"  preferred_batch_size: {b}\n" for b in preferred)
            + f"  max_queue_delay_microseconds: {MAX_QUEUE_DELAY_US}\n}}\n"
            + f"instance_group {{\n  count: 1\n  kind: {instance_kind}\n}}\n")



def write_model(model: TritonModel, source: str | Path, graph: str | Path, max_batch: int) -> TritonModel:
    """Copy ``source`` into ``model``'s folder and write its ``config.pbtxt``.

    ONNX Runtime models get ``KIND_AUTO`` (a GPU where Triton sees one, else the CPU), TensorRT plans
    ``KIND_GPU``; the tensors are read from the ONNX ``graph`` (the model itself, or the graph the
    plan was built from).

    Raises:
        ToolkitError: a bad name or ``max_batch``, or a graph without a dynamic batch axis.
    """
    _check(model.name, max_batch)
    inputs, outputs = graph_io(graph)
    with atomic_path(model.model_file) as tmp:
        shutil.copyfile(source, tmp)
    write_text_atomic(model.config, model_config_text(model.name, model.platform, max_batch, inputs, outputs,
                                                      INSTANCE_KINDS[model.platform]))
    return model


def _check(name: str, max_batch: int) -> None:
    if not name or "/" in name or name.startswith("."):
        raise ToolkitError(f"--triton-name {name!r}: must be a plain folder name")
    if max_batch < 1:
        raise ToolkitError(f"--max-batch {max_batch}: must be 1 or more")
