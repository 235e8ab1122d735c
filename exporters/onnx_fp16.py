"""ONNX-side preparation for TensorRT: the input shape of an encoder graph and its mixed-fp16 version.

TensorRT 11 only builds strongly typed networks, so for FP16 the ONNX itself is converted to
mixed precision, keeping the l2 normalisation in fp32 because its sum of squares overflows fp16
(a TensorRT maintainer's advice).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx

from exporters.metadata import INPUT_NAME
from toolkit.errors import ToolkitError
from toolkit.io import write_bytes_atomic

# Ops of F.normalize as the torch exporters emit it (ReduceL2/Clip/Expand/Div from dynamo;
# Pow/ReduceSum/Sqrt/Max from the older TorchScript exporter): kept fp32 in the fp16 model.
NORMALISATION_OPS = ("ReduceL2", "Div", "ReduceSumSquare", "Sqrt", "Clip", "Max", "Expand", "Pow", "ReduceSum")


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
    write_bytes_atomic(out_path, model.SerializeToString())
    return out_path
