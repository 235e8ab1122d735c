"""TensorRT engine build orchestration against a fake ``tensorrt`` module (CPU): what our code passes to the API."""

import json
import sys
import types
from pathlib import Path

import onnx
import pytest
import torch

from exporters import tensorrt_engine as trt_export
from tests.exporters.test_tensorrt import TinyEncoder, export


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    return export(TinyEncoder(), tmp_path_factory.mktemp("onnx") / "encoder.onnx")


# ----------------------------------------------------------------------------- build orchestration, faked


def fake_tensorrt(version: str, calls: dict) -> types.ModuleType:
    """A stand-in for the `tensorrt` module that records every argument build_engine passes to it.

    It checks the orchestration (which ONNX is parsed, which network, flags, profile, layer
    precisions, cache bytes and files) on CPU; whether the real API accepts these calls is for
    the GPU test above.
    """
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.float32, trt.float16 = "DataType.FLOAT", "DataType.HALF"

    class Logger:
        WARNING = 2

        def __init__(self, level):
            calls.setdefault("logger_levels", []).append(level)

    trt.Logger = Logger
    trt.LayerType = types.SimpleNamespace(
        CONVOLUTION="conv", MATRIX_MULTIPLY="mm", CONSTANT="const", SHAPE="shape"
    )
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="workspace")
    flags = {"PREFER_PRECISION_CONSTRAINTS": "prefer"} | ({"FP16": "fp16"} if version.startswith("10.") else {})
    trt.BuilderFlag = types.SimpleNamespace(**flags)

    class Layer(types.SimpleNamespace):
        def get_output(self, j):
            return types.SimpleNamespace(dtype=self.dtype)

        def set_output_type(self, j, dtype):
            calls.setdefault("output_types", []).append((self.name, j, dtype))

    layers = [Layer(type=t, name=n, dtype=d, num_outputs=1, precision=None) for t, n, d in [
        ("conv", "conv", trt.float32), ("act", "relu", trt.float32), ("mm", "fc", trt.float32),
        ("ew", "bias", trt.float32), ("shape", "shape", "DataType.INT64"), ("reduce", "l2", trt.float32),
        ("const", "eps", trt.float32), ("ew", "div", trt.float32),
    ]]
    calls["layers"] = layers

    class Profile:
        def set_shape(self, name, *shapes):
            self.shapes = (name, *shapes)

    tensor = types.SimpleNamespace
    network = types.SimpleNamespace(
        num_layers=len(layers), get_layer=layers.__getitem__, num_inputs=1, num_outputs=1,
        get_input=lambda i: tensor(name="images", shape=(-1, 3, 32, 32), dtype=trt.float32),
        get_output=lambda i: tensor(name="embeddings", shape=(-1, 32), dtype=trt.float32),
    )
    calls["network"] = network

    class Cache:
        def __init__(self, data):
            self.data = bytes(data)

    def set_timing_cache(cache, ignore_mismatch):
        calls.setdefault("set_timing_cache", []).append((cache.data, ignore_mismatch))
        return cache.data == b"cache-v1"

    def create_timing_cache(data):
        calls.setdefault("create_timing_cache", []).append(bytes(data))
        return Cache(data)

    config = types.SimpleNamespace(
        set_memory_pool_limit=lambda pool, n: calls.update(workspace=(pool, n)),
        set_flag=lambda flag: calls.setdefault("flags", []).append(flag),
        create_timing_cache=create_timing_cache,
        set_timing_cache=set_timing_cache,
        get_timing_cache=lambda: types.SimpleNamespace(serialize=lambda: b"cache-v1"),
        add_optimization_profile=lambda p: calls.update(profile=p.shapes),
    )
    calls["config"] = config

    def parse_from_file(path: str) -> bool:
        calls["parsed"] = path
        return True

    def builder(logger):
        calls["builder_logger"] = logger
        return types.SimpleNamespace(
            create_network=lambda flags: calls.update(network_flags=flags) or network,
            create_builder_config=lambda: config,
            create_optimization_profile=Profile,
            build_serialized_network=lambda net, cfg: calls.update(built=(net, cfg)) or b"ENGINE",
        )

    def onnx_parser(net, logger):
        calls["parser_args"] = (net, logger)
        return types.SimpleNamespace(parse_from_file=parse_from_file, num_errors=0)

    trt.Builder = builder
    trt.OnnxParser = onnx_parser
    return trt


@pytest.mark.parametrize("version, fp16", [("10.9.0", True), ("11.4.0", True), ("10.9.0", False)])
def test_build_engine_orchestration_with_a_fake_tensorrt(
    tmp_path: Path, tiny_onnx: Path, monkeypatch: pytest.MonkeyPatch, version: str, fp16: bool
) -> None:
    calls: dict = {}
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(version, calls))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "Fake GPU")
    engine, cache = tmp_path / "out" / "encoder.engine", tmp_path / "out" / "timing.cache"

    settings = dict(opt_batch=8, max_batch=64, fp16=fp16, workspace_bytes=2**30, timing_cache_path=cache)
    info = trt_export.build_engine(tiny_onnx, engine, **settings)

    # what our code handed to TensorRT
    strongly_typed = fp16 and version.startswith("11.")
    parsed = tmp_path / "out" / "encoder.fp16.onnx" if strongly_typed else tiny_onnx
    assert calls["parsed"] == str(parsed) and parsed.is_file()
    if strongly_typed:  # the converted graph keeps fp32 I/O and the normalisation in fp32
        model = onnx.load(str(parsed))
        assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    assert calls["logger_levels"] == [2]  # Logger.WARNING
    assert calls["parser_args"] == (calls["network"], calls["builder_logger"])
    assert calls["built"] == (calls["network"], calls["config"])
    assert calls["network_flags"] == 0 and calls["workspace"] == ("workspace", 2**30)
    assert calls["profile"] == ("images", (1, 3, 32, 32), (8, 3, 32, 32), (64, 3, 32, 32))
    pinned = ["bias", "l2", "div"] if fp16 and not strongly_typed else []  # after the last matmul, float only
    assert calls.get("flags", []) == (["fp16", "prefer"] if pinned else [])
    assert [layer.name for layer in calls["layers"] if layer.precision is not None] == pinned
    assert all(layer.precision == "DataType.FLOAT" for layer in calls["layers"] if layer.name in pinned)
    assert calls.get("output_types", []) == [(name, 0, "DataType.FLOAT") for name in pinned]
    assert calls["create_timing_cache"] == [b"", b""]  # no cache file yet: an empty cache, then a fresh one
    assert [ignore for _, ignore in calls["set_timing_cache"]] == [False]  # only the fresh empty one is set

    # what our code wrote
    assert engine.read_bytes() == b"ENGINE" and cache.read_bytes() == b"cache-v1"
    assert json.loads((engine.parent / "engine.json").read_text()) == info
    assert info["fp32_pinned_layers"] == pinned and info["timing_cache_loaded"] is False
    assert info["profile"] == {"input": "images", "min": [1, 3, 32, 32], "opt": [8, 3, 32, 32], "max": [64, 3, 32, 32]}
    assert info["trtexec"] == trt_export.trtexec_command(
        parsed, engine, chw=(3, 32, 32), min_batch=1, opt_batch=8, max_batch=64, workspace_bytes=2**30,
        timing_cache_path=cache, fp16=fp16, trt_major=int(version[:2]),
    )
    assert info["trtexec"] in (engine.parent / "trtexec.sh").read_text()

    calls.clear()
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt(version, calls))
    again = trt_export.build_engine(tiny_onnx, engine, **settings)
    assert calls["create_timing_cache"] == [b"cache-v1"]  # the saved cache's bytes, read back
    assert calls["set_timing_cache"] == [(b"cache-v1", False)]
    assert again["timing_cache_loaded"] is True
