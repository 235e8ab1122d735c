"""The OpenVINO backend against torch fp32 and ONNX Runtime, the default choice between backends, and
a missing ``openvino`` package as one line."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from exporters.model_files import resolve_model
from exporters.runtime import OnnxBackend, open_backend
from scoring.embedding import default_backend
from scoring.index.fingerprint import model_fingerprint
from tests.test_cli import invoke
from tests.tiny_models import reference_embeddings
from toolkit.errors import ToolkitError

pytest.importorskip("openvino", reason="the openvino extra is not installed (pip install -e '.[openvino]')")

FAST = ("--workers", "0", "--threads", "1")


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).min())


def png_paths(images: Path) -> list[str]:
    return sorted(str(p) for p in images.rglob("*.png"))


@pytest.mark.parametrize("precision", ["auto", "bf16", "fp32"])
def test_openvino_embeddings_agree_with_torch_fp32_and_onnx_runtime(exported_run: Path, images: Path,
                                                                    precision: str) -> None:
    from scoring.images import embed_files

    onnx_file = exported_run / "export" / "encoder.onnx"
    paths = png_paths(images)
    openvino = open_backend(onnx_file, "openvino", threads=1, precision=precision)
    got, ok, errors = embed_files(openvino, paths, batch_size=7, progress=False)
    by_ort = embed_files(OnnxBackend(onnx_file, threads=1, device="cpu"), paths, batch_size=7, progress=False)[0]
    reference = reference_embeddings(exported_run, paths)  # torch fp32 on the checkpoint, decoded independently

    assert ok == paths and errors == {} and got.shape == reference.shape and got.dtype == np.float32
    assert openvino.name == "openvino" and "OpenVINO" in openvino.description and "1 threads" in openvino.description
    assert min_cosine(got, reference) >= 0.999 and min_cosine(got, by_ort) >= 0.999
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-3)
    if openvino.encoder.precision == "fp32":  # asked for, or a CPU without bf16: the fp32 graph
        np.testing.assert_allclose(got, by_ort, atol=1e-5)
    # The next call does not overwrite what an earlier one returned (the infer request is reused).
    first = openvino.embed(np.zeros((2, 3, 16, 16), dtype=np.float32))
    kept = first.copy()
    openvino.embed(np.ones((3, 3, 16, 16), dtype=np.float32))
    np.testing.assert_array_equal(first, kept)


def test_openvino_reads_a_run_folders_export_and_fingerprints_like_onnx_runtime(exported_run: Path) -> None:
    onnx_file = exported_run / "export" / "encoder.onnx"
    assert resolve_model(exported_run, "openvino") == ("openvino", onnx_file)
    openvino = open_backend(exported_run, "openvino", threads=1)
    ort = open_backend(onnx_file, "onnx", threads=1)
    # One embedding space: an index built on one backend is searchable with the other.
    assert model_fingerprint(openvino) == model_fingerprint(ort)
    with pytest.raises(ToolkitError, match="runs on the CPU"):
        open_backend(onnx_file, "openvino", device="cuda")


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201 - a setter
    """Sets what ``default_backend`` sees: native bf16, ONNX Runtime's providers, openvino installed."""
    import onnxruntime

    import exporters.openvino_runtime as ov_runtime
    import toolkit.engine.precision as precision

    def set_machine(bf16: bool = True, cuda: bool = False, openvino: bool = True) -> None:
        providers = (["CUDAExecutionProvider"] if cuda else []) + ["CPUExecutionProvider"]
        monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: bf16)
        monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: providers)
        monkeypatch.setattr(ov_runtime, "openvino_available", lambda: openvino)

    return set_machine


def export_with_recorded_cosine(exported_run: Path, folder: Path, cosine: float | None) -> Path:
    """A copy of the run's export folder whose ``encoder.json`` records ``cosine`` as the OpenVINO bf16
    agreement (None: the key removed, as from an export that could not measure it)."""
    import json
    import shutil

    shutil.copytree(exported_run / "export", folder)
    meta = json.loads((folder / "encoder.json").read_text())
    meta.pop("openvino_bf16_min_cosine", None)
    if cosine is not None:
        meta["openvino_bf16_min_cosine"] = cosine
    (folder / "encoder.json").write_text(json.dumps(meta))
    return folder / "encoder.onnx"


def test_default_backend_rule(exported_run: Path, tmp_path: Path, machine) -> None:
    onnx_file = export_with_recorded_cosine(exported_run, tmp_path / "good", 0.9996)
    int8 = tmp_path / "good" / "encoder.int8.onnx"
    int8.write_bytes(onnx_file.read_bytes())
    machine(bf16=True, cuda=False, openvino=True)
    assert default_backend(onnx_file)[0] == "openvino"
    assert default_backend(tmp_path / "good")[0] == "openvino"  # an export folder holds encoder.onnx
    assert default_backend(exported_run)[0] == "torch"  # a run folder: its checkpoint, not a possibly stale export
    assert default_backend(int8)[0] == "onnx"  # the int8 gate was measured on ONNX Runtime
    # bf16 that lost more than the bound at export, or an export that never measured it: exact fp32
    kind, why = default_backend(export_with_recorded_cosine(exported_run, tmp_path / "lossy", 0.9946))
    assert kind == "onnx" and "only to cosine 0.9946" in why and "--backend openvino overrides" in why
    kind, why = default_backend(export_with_recorded_cosine(exported_run, tmp_path / "old", None))
    assert kind == "onnx" and "recorded no OpenVINO bf16 check" in why
    machine(bf16=False)
    assert default_backend(onnx_file) == ("onnx", "default for an ONNX model on a CPU without native bf16")
    machine(cuda=True)
    assert default_backend(onnx_file)[0] == "onnx"
    machine(openvino=False)
    kind, why = default_backend(onnx_file)
    assert kind == "onnx" and "pip install -e '.[openvino]'" in why


def test_default_backend_of_a_model_moved_out_of_its_export_folder_reads_its_own_metadata(
        exported_run: Path, tmp_path: Path, machine) -> None:
    from dataclasses import replace

    from exporters.onnx_export import read_info, rewrite_props

    machine(bf16=True, cuda=False, openvino=True)
    for name, cosine, kind in (("good", 0.9996, "openvino"), ("lossy", 0.9946, "onnx")):
        moved = tmp_path / name / "renamed.onnx"  # no encoder.json beside it
        moved.parent.mkdir()
        moved.write_bytes((exported_run / "export" / "encoder.onnx").read_bytes())
        rewrite_props(moved, replace(read_info(moved), openvino_bf16_min_cosine=cosine))
        assert not (moved.parent / "encoder.json").exists()
        assert default_backend(moved)[0] == kind


@pytest.mark.parametrize("bf16", [True, False])
def test_export_records_the_openvino_bf16_agreement_where_it_can_run(tmp_path: Path, bf16: bool,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    import toolkit.engine.precision as precision
    from exporters.export import export_checkpoint
    from exporters.runtime import OpenVinoBackend, TorchBackend
    from tests.tiny_models import make_checkpoint
    from toolkit.engine.checkpoint import Checkpoint

    monkeypatch.setattr(precision, "cpu_supports_bf16", lambda: bf16)
    run = make_checkpoint(tmp_path / "run", kind="finetune")
    export_checkpoint(run)
    meta = json.loads((run / "export" / "encoder.json").read_text())
    if not bf16:
        assert "openvino_bf16_min_cosine" not in meta
        return
    recorded = meta["openvino_bf16_min_cosine"]
    # Independently: OpenVINO bf16 against the checkpoint in torch fp32 on random images of the model's input.
    torch_fp32 = TorchBackend(Checkpoint.load(run).encoder(), OpenVinoBackend(run / "export" / "encoder.onnx").info,
                              precision="fp32", device="cpu", threads=1)
    images = np.random.default_rng(1).normal(size=(8, *torch_fp32.info.input_chw)).astype(np.float32)
    ov = OpenVinoBackend(run / "export" / "encoder.onnx", threads=1, precision="bf16")
    assert 0.99 < recorded <= 1.0 + 1e-6
    assert min_cosine(ov.embed(images), torch_fp32.embed(images)) > 0.99


def test_missing_openvino_is_one_clear_line(exported_run: Path, images: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m == "openvino" or m.startswith("openvino.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "openvino", None)  # what `import openvino` sees without the package
    result = invoke("embed", str(exported_run / "export" / "encoder.onnx"), str(images), "--out",
                    str(tmp_path / "e.npz"), "--backend", "openvino", *FAST)
    errors = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert errors == ["error: --backend openvino: the openvino package is not installed; "
                      "pip install -e '.[openvino]' (or pip install openvino)"]
