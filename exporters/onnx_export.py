"""PyTorch encoder -> ``encoder.onnx``: one file, dynamic batch, metadata inside, validated.

The graph takes ``images`` [batch, C, S, S] float32, already normalised (exactly what the
``Encoder`` takes), and returns ``embeddings`` [batch, D] float32, l2-normalised inside the
graph in fp32 (``Encoder.forward`` casts to float before ``F.normalize``). It is written with
the dynamo exporter (``torch.onnx.export(dynamo=True)``, torch >= 2.9's default), which folds
BatchNorm into the preceding Conv/Gemm, and with ``external_data=False`` so models under the
2 GB protobuf limit stay one file.

Never run this file as a script: its name would shadow the ``onnx`` package.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from exporters import metadata
from exporters.export_folder import ExportFolder
from exporters.metadata import INPUT_NAME, OUTPUT_NAME, ModelInfo
from toolkit.io import atomic_path
from toolkit.errors import ToolkitError

DEFAULT_OPSET = 20  # the dynamo exporter's own default since torch 2.9
MIN_OPSET = 18  # the dynamo exporter emits opset 18 at the lowest


def max_opset() -> int:
    """The newest opset the installed exporter converts to by itself.

    The dynamo exporter builds the graph at opset 18 and converts it with onnxscript's version
    converter, which supports up to ``SUPPORTED_MAX_ONNX_OPSET``; past that it falls back to the
    ONNX C API (or, for an opset ONNX does not know, logs a traceback and silently keeps 18).
    """
    try:
        from onnxscript.version_converter._version_converter import SUPPORTED_MAX_ONNX_OPSET
    except ImportError:  # another onnxscript layout: torch's own bound
        from torch.onnx._constants import ONNX_MAX_OPSET as SUPPORTED_MAX_ONNX_OPSET
    return min(int(SUPPORTED_MAX_ONNX_OPSET), onnx.defs.onnx_opset_version())


def check_opset(opset: int) -> None:
    """Raises ToolkitError unless the exporter supports ``opset`` (see ``max_opset``)."""
    if not MIN_OPSET <= opset <= max_opset():
        raise ToolkitError(f"--opset {opset}: the exporter (torch {torch.__version__}) writes opsets "
                           f"{MIN_OPSET} to {max_opset()}; default {DEFAULT_OPSET}")


def graph_opset(model: onnx.ModelProto) -> int:
    """The default-domain opset a model imports (what it really is, whatever was asked for)."""
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if not versions:
        raise ToolkitError("the exported graph imports no ONNX opset")
    return max(versions)


def export_onnx(encoder: nn.Module, info: ModelInfo, path: str | Path, *, opset: int = DEFAULT_OPSET,
                max_batch: int = 1024) -> ModelInfo:
    """Exports ``encoder`` to ``path`` with a dynamic batch and ``info`` in ``metadata_props``.

    Args:
        encoder: maps normalised [N, C, S, S] float32 to [N, D] unit vectors; put in eval mode here.
        info: the model's metadata; ``opset`` is filled in.
        path: the ``.onnx`` file, written atomically (a temporary file renamed over it).
        opset: ONNX opset to target (>= 18).
        max_batch: upper bound of the symbolic batch dimension given to ``torch.export``.

    Returns:
        ``info`` with the opset of the written graph.

    Raises:
        ToolkitError: an opset outside ``check_opset``'s range, a failed export, a graph of
            another opset than asked for, or a graph that fails validation.
    """
    check_opset(opset)
    if max_batch < 2:
        raise ToolkitError(f"--max-batch {max_batch}: must be at least 2 (the batch dimension is dynamic)")
    path = Path(path)
    info = info.with_opset(opset)
    encoder = encoder.eval().float()
    # An example batch of 2: with 1, torch.export may specialise the batch dimension to a constant.
    example = torch.zeros(2, *info.input_chw)
    batch = torch.export.Dim("batch", min=1, max=max_batch)
    try:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(
                encoder, (example,), dynamo=True, external_data=False, opset_version=opset,
                dynamic_shapes=({0: batch},), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                verbose=False,
            )
        model = program.model_proto
        written = graph_opset(model)
        if written != opset:
            raise ToolkitError(f"--opset {opset}: the exporter wrote an opset {written} graph instead; "
                               f"export with --opset {written}")
        set_props(model, info)
        model.producer_name = "toolkit"
        validate(model, info, source=str(path))
        with atomic_path(path) as tmp:
            onnx.save_model(model, str(tmp))  # < 2 GB: one file, weights inline
    except ToolkitError:
        raise
    except Exception as exc:  # noqa: BLE001 - the exporter raises many types; report one line
        first = " ".join(str(exc).split())[:300]
        raise ToolkitError(f"ONNX export of {info.checkpoint or 'the encoder'} failed: {type(exc).__name__}: {first}") from None
    return info


def set_props(model: onnx.ModelProto, info: ModelInfo) -> None:
    """Makes ``model``'s ``metadata_props`` exactly ``info``'s (``metadata.to_props``)."""
    del model.metadata_props[:]
    for key, value in metadata.to_props(info).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value


def rewrite_props(path: str | Path, info: ModelInfo) -> None:
    """Replaces the ``metadata_props`` of the ONNX file at ``path`` with ``info``'s (the graph is untouched),
    so that a figure measured after export (the OpenVINO bf16 agreement) is in the file as in ``encoder.json``."""
    model = onnx.load(str(path))
    set_props(model, info)
    with atomic_path(path) as tmp:
        onnx.save_model(model, str(tmp))


@contextlib.contextmanager
def _quiet():
    """Silence the exporter's progress prints and warnings; errors still raise."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        yield


def validate(model: onnx.ModelProto, info: ModelInfo, source: str) -> None:
    """``onnx.checker`` (full check), strict shape inference, and the I/O contract.

    The contract: one input ``images`` [batch, C, S, S] float32 with a symbolic batch, one
    output ``embeddings`` [batch, D] float32 with the same symbolic batch.

    Raises:
        ToolkitError: naming the first check that failed.
    """
    try:
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    except Exception as exc:  # noqa: BLE001 - checker and inference raise their own types
        raise ToolkitError(f"{source}: the exported ONNX fails validation: {' '.join(str(exc).split())[:300]}") from None
    shapes = {v.name: _shape(v) for v in [*inferred.graph.input, *inferred.graph.output]}
    types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.input, *inferred.graph.output]}
    names_in, names_out = [i.name for i in inferred.graph.input], [o.name for o in inferred.graph.output]
    if names_in != [INPUT_NAME] or names_out != [OUTPUT_NAME]:
        raise ToolkitError(f"{source}: expected input {INPUT_NAME!r} and output {OUTPUT_NAME!r}, got {names_in} -> {names_out}")
    want_in = [shapes[INPUT_NAME][0], *info.input_chw]
    want_out = [shapes[INPUT_NAME][0], info.embedding_dim]
    if not isinstance(want_in[0], str) or shapes[INPUT_NAME] != want_in or shapes[OUTPUT_NAME] != want_out:
        raise ToolkitError(
            f"{source}: shapes {shapes[INPUT_NAME]} -> {shapes[OUTPUT_NAME]}; expected "
            f"[batch, {', '.join(map(str, info.input_chw))}] -> [batch, {info.embedding_dim}] with a symbolic batch"
        )
    if set(types.values()) != {onnx.TensorProto.FLOAT}:
        raise ToolkitError(f"{source}: input and output must be float32, got element types {types}")


def _shape(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value.type.tensor_type.shape.dim]


def read_info(path: str | Path) -> ModelInfo:
    """The toolkit metadata of an ONNX file: its ``metadata_props``, else ``encoder.json`` beside it.

    Raises:
        ToolkitError: a missing or unreadable file, or no toolkit metadata in either place.
    """
    path = Path(path)
    if not path.is_file():
        raise ToolkitError(f"{path}: no such ONNX file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf decode errors of several types
        raise ToolkitError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    props = {p.key: p.value for p in model.metadata_props}
    if props.get("format") == f'"{metadata.FORMAT}"':
        return metadata.from_props(props, str(path))
    beside = ExportFolder.of(path).json
    if beside.is_file():
        return metadata.read_json(beside)
    raise ToolkitError(
        f"{path}: not a toolkit model (no toolkit metadata in the ONNX and no encoder.json beside it); "
        "export a checkpoint with toolkit export"
    )
