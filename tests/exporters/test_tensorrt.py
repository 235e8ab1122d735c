"""TensorRT export: everything around the engine runs on CPU; the build itself needs a GPU."""

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from exporters import onnx_fp16
from exporters import tensorrt_engine as trt_export
from exporters.tensorrt_runtime import TensorRTEncoder
from toolkit.errors import ToolkitError

UNAVAILABLE = trt_export.tensorrt_unavailable_reason()
needs_tensorrt = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"TensorRT cannot run here: {UNAVAILABLE}")
without_tensorrt = pytest.mark.skipif(UNAVAILABLE is None, reason="TensorRT is available here")


class TinyEncoder(nn.Module):
    """conv -> relu -> global average pool -> linear -> l2 normalisation, like the real encoder."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.fc = nn.Linear(16, 32)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv(images)).mean(dim=(2, 3))  # N x 16
        return F.normalize(self.fc(x), dim=1)  # N x 32


def export(model: nn.Module, path: Path, dynamic: bool = True, input_name: str = "images") -> Path:
    torch.manual_seed(0)
    example = torch.randn(2, 3, 32, 32)
    shapes = {"images": {0: torch.export.Dim("batch", min=1, max=1024)}} if dynamic else None
    torch.onnx.export(
        model.eval(), (example,), str(path), dynamo=True, external_data=False, dynamic_shapes=shapes,
        input_names=[input_name], output_names=["embeddings"], verbose=False,
    )
    return path


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return export(TinyEncoder(), tmp_path_factory.mktemp("onnx") / "encoder.onnx")


BUILD = dict(opt_batch=8, max_batch=32, fp16=False, workspace_bytes=2**30)


def run_ort(path: Path, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"images": images})[0]


# ----------------------------------------------------------------------------- availability


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_reason_names_the_missing_package() -> None:
    assert trt_export.tensorrt_unavailable_reason() == "the Python package `tensorrt` is not installed"


def test_reason_names_a_missing_cuda_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert trt_export.tensorrt_unavailable_reason() == "no CUDA device is available"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert trt_export.tensorrt_unavailable_reason() is None


@without_tensorrt
def test_encoder_and_build_raise_toolkit_error_with_the_reason(tmp_path: Path, tiny_onnx: Path) -> None:
    (tmp_path / "encoder.engine").write_bytes(b"not an engine")
    with pytest.raises(ToolkitError, match="cannot run the TensorRT engine") as e:
        TensorRTEncoder(tmp_path / "encoder.engine")
    assert UNAVAILABLE in str(e.value)
    with pytest.raises(ToolkitError, match="cannot build a TensorRT engine") as e:
        trt_export.build_engine(tiny_onnx, tmp_path / "encoder.engine", **BUILD)
    assert UNAVAILABLE in str(e.value)
    assert not (tmp_path / "engine.json").exists()


# ----------------------------------------------------------------------------- checks before the build


def test_input_shape_comes_from_the_onnx(tiny_onnx: Path) -> None:
    assert onnx_fp16.onnx_input_chw(tiny_onnx) == (3, 32, 32)


def test_build_engine_rejects_bad_arguments_before_needing_tensorrt(tmp_path: Path, tiny_onnx: Path) -> None:
    engine = tmp_path / "encoder.engine"
    with pytest.raises(ToolkitError, match="min <= opt <= max"):
        trt_export.build_engine(tiny_onnx, engine, **{**BUILD, "opt_batch": 64})
    with pytest.raises(ToolkitError, match="at least 1 MiB"):
        trt_export.build_engine(tiny_onnx, engine, **{**BUILD, "workspace_bytes": 1000})
    with pytest.raises(ToolkitError, match="missing.onnx: no such ONNX file"):
        trt_export.build_engine(tmp_path / "missing.onnx", engine, **BUILD)


def test_onnx_input_errors_name_the_problem(tmp_path: Path) -> None:
    renamed = export(TinyEncoder(), tmp_path / "renamed.onnx", input_name="x")
    with pytest.raises(ToolkitError, match=r"renamed.onnx: no input named 'images'; inputs are \['x'\]"):
        onnx_fp16.onnx_input_chw(renamed)
    fixed = export(TinyEncoder(), tmp_path / "fixed.onnx", dynamic=False)
    with pytest.raises(ToolkitError, match="fixed.onnx: input 'images' has a fixed batch of 2"):
        onnx_fp16.onnx_input_chw(fixed)


# ----------------------------------------------------------------------------- trtexec command

COMMON = dict(
    chw=(3, 32, 32), min_batch=1, opt_batch=64, max_batch=256, workspace_bytes=2**30,
    timing_cache_path="out/timing.cache",
)


def test_trtexec_command_on_tensorrt_10_uses_the_fp16_flag() -> None:
    command = trt_export.trtexec_command("out/encoder.onnx", "out/e.engine", fp16=True, trt_major=10, **COMMON)
    assert command == (
        "trtexec --onnx=out/encoder.onnx --saveEngine=out/e.engine --minShapes=images:1x3x32x32 "
        "--optShapes=images:64x3x32x32 --maxShapes=images:256x3x32x32 --memPoolSize=workspace:1024M "
        "--timingCacheFile=out/timing.cache --fp16"
    )


def test_trtexec_command_on_tensorrt_11_has_no_precision_flag() -> None:
    command = trt_export.trtexec_command("out/encoder.fp16.onnx", "out/e.engine", fp16=True, trt_major=11, **COMMON)
    assert command == (
        "trtexec --onnx=out/encoder.fp16.onnx --saveEngine=out/e.engine --minShapes=images:1x3x32x32 "
        "--optShapes=images:64x3x32x32 --maxShapes=images:256x3x32x32 --memPoolSize=workspace:1024M "
        "--timingCacheFile=out/timing.cache"
    )


def test_trtexec_command_fp32_without_cache_and_with_spaces() -> None:
    command = trt_export.trtexec_command(
        "my dir/encoder.onnx", "e.engine", fp16=False, trt_major=10,
        **{**COMMON, "timing_cache_path": None, "workspace_bytes": 512 * 2**20},
    )
    assert command.startswith("trtexec '--onnx=my dir/encoder.onnx' --saveEngine=e.engine ")
    assert command.endswith("--memPoolSize=workspace:512M")
    assert "--fp16" not in command and "--timingCacheFile" not in command


# ----------------------------------------------------------------------------- mixed fp16 ONNX


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    types_ = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
    types_.update({t.name: t.data_type for t in graph.initializer})
    return types_


def test_mixed_fp16_keeps_io_and_normalisation_fp32_and_agrees_with_fp32(tmp_path: Path, tiny_onnx: Path) -> None:
    out = onnx_fp16.convert_to_mixed_fp16(tiny_onnx, tmp_path / "encoder.fp16.onnx")
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    types_ = tensor_types(model)
    float32, float16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    ops = {n.op_type for n in model.graph.node}
    assert {"ReduceL2", "Div", "Conv", "Gemm"} <= ops
    for node in model.graph.node:
        float_io = [types_[t] for t in [*node.input, *node.output] if t and types_.get(t) in (float32, float16)]
        if node.op_type in onnx_fp16.NORMALISATION_OPS:
            assert set(float_io) == {float32}, node.op_type
        if node.op_type in ("Conv", "Gemm"):  # the bulk of the work did move to fp16
            assert set(float_io) == {float16}, node.op_type
    assert [types_[i.name] for i in model.graph.input] == [float32]
    assert [types_[o.name] for o in model.graph.output] == [float32]

    images = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    ref, got = run_ort(tiny_onnx, images), run_ort(out, images)
    assert got.dtype == np.float32 and got.shape == (5, 32)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)
    assert (ref * got).sum(1).min() > 0.999


def test_converting_an_fp16_model_again_is_an_error(tmp_path: Path, tiny_onnx: Path) -> None:
    once = onnx_fp16.convert_to_mixed_fp16(tiny_onnx, tmp_path / "once.onnx")
    with pytest.raises(ToolkitError, match="once.onnx: cannot convert to fp16"):
        onnx_fp16.convert_to_mixed_fp16(once, tmp_path / "twice.onnx")


# ----------------------------------------------------------------------------- on a GPU with TensorRT


@needs_tensorrt
@pytest.mark.parametrize("fp16", [False, True])
def test_engine_build_and_inference_agree_with_onnx_runtime(tmp_path: Path, tiny_onnx: Path, fp16: bool) -> None:
    engine = tmp_path / "encoder.engine"
    cache = tmp_path / "timing.cache"
    settings = dict(opt_batch=4, max_batch=8, fp16=fp16, workspace_bytes=2**28, timing_cache_path=cache)
    info = trt_export.build_engine(tiny_onnx, engine, **settings)
    assert engine.is_file() and cache.is_file() and (tmp_path / "trtexec.sh").is_file()
    assert json.loads((tmp_path / "engine.json").read_text()) == info
    profile = {"input": "images", "min": [1, 3, 32, 32], "opt": [4, 3, 32, 32], "max": [8, 3, 32, 32]}
    assert info["profile"] == profile
    assert info["precision"] == ("fp16" if fp16 else "fp32") and info["gpu"]
    assert ("--fp16" in info["trtexec"]) == (fp16 and int(info["tensorrt_version"].split(".")[0]) < 11)

    encoder = TensorRTEncoder(engine)
    images = np.random.default_rng(0).standard_normal((19, 3, 32, 32)).astype(np.float32)  # 3 chunks of <= 8
    got, ref = encoder.embed(images), run_ort(tiny_onnx, images)
    assert got.shape == (19, 32) and got.dtype == np.float32
    assert (got * ref).sum(1).min() > (0.999 if fp16 else 0.99999)

    again = trt_export.build_engine(tiny_onnx, engine, **settings)
    assert again["timing_cache_loaded"] is True
