"""The steps of ``toolkit export``, in order; each reads the previous step's output from the export folder.

1. ``write_onnx``: the encoder -> ``ExportFolder.staged_onnx`` (a temporary name beside
   ``encoder.onnx``), with metadata, checker and shape inference (``exporters.onnx_export``);
2. ``parity_gate``: the staged graph on ONNX Runtime's CPU provider against PyTorch fp32
   (``exporters.parity``). Failed: the graph is kept as ``encoder.rejected.onnx`` and the export
   fails. Passed: where OpenVINO and native bf16 are present, the graph's OpenVINO bf16 agreement with
   PyTorch fp32 is measured on the same images and recorded in the metadata (``check_openvino_bf16``:
   the default backend's condition); the graph becomes ``encoder.onnx``, every file derived from the
   previous one is removed (``ExportFolder.remove_derived``) and ``encoder.json`` is written beside it;
3. ``write_int8`` (``--int8``): ``encoder.onnx`` -> ``encoder.int8.onnx`` calibrated on ``--calib-data``;
4. ``gate_int8`` (``--int8``): ``encoder.int8.onnx`` against fp32 on held-out images, renamed
   ``encoder.int8.onnx.rejected`` when it fails (``exporters.int8_step``);
5. ``write_triton_onnx`` (``--triton``): ``encoder.onnx`` -> ``REPO/<name>``;
6. ``build_tensorrt`` (``--trt``): ``encoder.onnx`` -> ``encoder.engine``;
7. ``write_triton_tensorrt`` (``--trt --triton``): ``encoder.engine`` -> ``REPO/<name>_trt``.

The Triton ONNX model is written before the TensorRT build, so an export whose ``--trt`` fails
(no TensorRT on this machine) still leaves a servable repository.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from torch import nn

from exporters import metadata, parity
from exporters.export_folder import ExportFolder, TritonModel
from exporters.export_options import ExportOptions
from exporters.int8 import Int8Report
from exporters.int8_step import export_int8, int8_gate
from exporters.metadata import ModelInfo
from exporters.onnx_export import export_onnx, rewrite_props
from exporters.runtime import OnnxBackend, TorchBackend
from exporters.tensorrt_engine import build_engine, tensorrt_unavailable_reason
from exporters.triton_repository import write_model
from toolkit.console import info as say
from toolkit.engine.checkpoint import Checkpoint
from toolkit.errors import ToolkitError
from toolkit.io import commit
from toolkit.out_paths import write_error

OPT_BATCH = 64  # the TensorRT profile's tuned batch (clipped to --max-batch)
WORKSPACE_BYTES = 4 * 2**30


@dataclass
class ExportResult:
    """What ``export_checkpoint`` wrote and measured."""

    out_dir: Path
    onnx_path: Path
    info: ModelInfo
    parity: list[parity.ParityCase]
    int8: Int8Report | None = None
    engine: dict[str, object] | None = None
    files: list[Path] = field(default_factory=list)


@dataclass
class ExportJob:
    """One export: its inputs, and what the steps so far wrote and measured (``info`` gains the opset)."""

    ckpt: Checkpoint
    encoder: nn.Module
    folder: ExportFolder
    opts: ExportOptions
    info: ModelInfo
    parity: list[parity.ParityCase] = field(default_factory=list)
    int8: Int8Report | None = None
    engine: dict[str, object] | None = None
    files: list[Path] = field(default_factory=list)

    def result(self) -> ExportResult:
        return ExportResult(self.folder.path, self.folder.onnx, self.info, self.parity, self.int8, self.engine,
                            self.files)


def write_onnx(job: ExportJob) -> None:
    job.info = export_onnx(job.encoder, job.info, job.folder.staged_onnx, opset=job.opts.opset,
                           max_batch=job.opts.max_batch)
    say(f"exported {job.ckpt.kind} checkpoint {job.ckpt.path} -> ONNX opset {job.info.opset}; checker and shape "
        "inference passed")


def parity_gate(job: ExportJob) -> None:
    """Runs and prints the parity cases; see the module docstring for what passing and failing leave."""
    folder, info, threads = job.folder, job.info, job.opts.threads
    reference = TorchBackend(job.encoder, info, precision="fp32", device="cpu", threads=threads)
    candidate = OnnxBackend(folder.staged_onnx, threads=threads, device="cpu", info=info)
    batches = parity.parity_batches(info, job.opts.data)
    job.parity = parity.check_parity(reference, candidate, batches)
    for case in job.parity:
        say(case.line())
    failed = [c for c in job.parity if not c.passed]
    if failed:
        commit(folder.staged_onnx, folder.rejected_onnx)
        worst = min(failed, key=lambda c: c.min_cosine)
        raise ToolkitError(
            f"parity gate failed: ONNX Runtime vs PyTorch on {worst.name} images, batch {worst.batch}: min cosine "
            f"{worst.min_cosine:.6f} (need >= {parity.MIN_COSINE}), max |diff| {worst.max_abs_diff:.2e} (need <= "
            f"{parity.MAX_ABS_DIFF:g}); the graph is kept as {folder.rejected_onnx}"
        )
    job.info = info = check_openvino_bf16(job, reference, batches)
    commit(folder.staged_onnx, folder.onnx)
    stale = folder.remove_derived()
    if stale:
        say(f"removed {len(stale)} file(s) derived from the previous {folder.ONNX}: {', '.join(p.name for p in stale)}")
    try:
        metadata.write_json(info, folder.json)
    except OSError as exc:
        raise write_error(folder.json, exc) from None
    job.files += [folder.onnx, folder.json]
    pair, unknown_threshold = info.thresholds.pair, info.thresholds.unknown
    threshold = "none stored (no eval.json beside the checkpoint)" if pair is None else f"{pair:.4f}"
    unknown = "" if unknown_threshold is None else f", unknown threshold {unknown_threshold:.4f}"
    say(f"wrote {folder.onnx} ({_size(folder.onnx)}) and {folder.JSON}; input [batch, "
        f"{', '.join(map(str, info.input_chw))}], embedding dim {info.embedding_dim}, pair threshold "
        f"{threshold}{unknown}")


def check_openvino_bf16(job: ExportJob, reference: TorchBackend, batches: dict[str, np.ndarray]) -> ModelInfo:
    """``job.info`` with the OpenVINO bf16 agreement measured on the parity gate's ``batches``, where it can run.

    ``embed``, ``score`` and ``index build`` run an fp32 ONNX model on OpenVINO bf16 by default on CPUs
    with native bf16 (the fastest exported path in ``benchmarks/inference.py``), but bf16's 8-bit
    mantissa costs deep networks more: a random-weight ResNet-50 kept only 0.994. The default takes
    OpenVINO bf16 only for a model whose recorded agreement reaches ``parity.BF16_MIN_COSINE``.
    """
    from exporters.openvino_runtime import openvino_available
    from toolkit.engine.precision import cpu_supports_bf16

    if not openvino_available() or not cpu_supports_bf16():
        return job.info
    from exporters.runtime import OpenVinoBackend

    candidate = OpenVinoBackend(job.folder.staged_onnx, threads=job.opts.threads, precision="bf16", info=job.info)
    cases = parity.check_parity(reference, candidate, batches)
    cosine = min(c.min_cosine for c in cases)
    info = replace(job.info, openvino_bf16_min_cosine=cosine)
    rewrite_props(job.folder.staged_onnx, info)  # the file's metadata and encoder.json stay one description
    verdict = ("the default backend on this CPU" if cosine >= parity.BF16_MIN_COSINE else
               f"below {parity.BF16_MIN_COSINE}: the default backend stays ONNX Runtime fp32 (--backend openvino overrides)")
    say(f"OpenVINO bf16 vs PyTorch fp32 on the parity images: min cosine {cosine:.6f}; {verdict}")
    return info


def write_int8(job: ExportJob) -> None:
    assert job.opts.calib_data is not None  # checked by ExportOptions.check
    job.int8 = export_int8(job.folder.onnx, job.folder.int8, job.info, job.opts.calib_data, job.opts.threads)


def gate_int8(job: ExportJob) -> None:
    assert job.int8 is not None  # measured by write_int8
    int8_gate(job.int8, job.opts.int8_min_cosine, job.opts.int8_accept)
    job.files.append(job.int8.path)


def write_triton_onnx(job: ExportJob) -> None:
    assert job.opts.triton is not None
    model = write_model(TritonModel.onnx(job.opts.triton, job.opts.triton_name), job.folder.onnx, job.folder.onnx,
                        job.opts.max_batch)
    job.files.append(model.config)
    say(f"wrote Triton model {model.path} ({model.platform}, max_batch_size {job.opts.max_batch}, dynamic batching)")


def build_tensorrt(job: ExportJob) -> None:
    folder, max_batch = job.folder, job.opts.max_batch
    reason = tensorrt_unavailable_reason()
    if reason is not None:
        raise ToolkitError(f"--trt: cannot build a TensorRT engine: {reason}; the ONNX was written to {folder.onnx}")
    engine = build_engine(folder.onnx, folder.engine, min_batch=1, opt_batch=min(OPT_BATCH, max_batch),
                          max_batch=max_batch, fp16=job.opts.fp16, workspace_bytes=WORKSPACE_BYTES,
                          timing_cache_path=folder.timing_cache)
    say(f"wrote {engine['engine']} ({engine['precision']}, TensorRT {engine['tensorrt_version']} on {engine['gpu']}, "
        f"batch 1..{max_batch}, built in {engine['build_seconds']} s); trtexec equivalent in {folder.trtexec}")
    job.engine = engine
    job.files.append(folder.engine)


def write_triton_tensorrt(job: ExportJob) -> None:
    assert job.opts.triton is not None
    model = write_model(TritonModel.tensorrt(job.opts.triton, job.opts.triton_name), job.folder.engine,
                        job.folder.onnx, job.opts.max_batch)
    job.files.append(model.config)
    say(f"wrote Triton model {model.path} ({model.platform}, max_batch_size {job.opts.max_batch})")


@dataclass(frozen=True)
class Step:
    """One step of the export and whether the options ask for it."""

    name: str
    run: Callable[[ExportJob], None]
    wanted: Callable[[ExportOptions], bool] = lambda opts: True


STEPS = (
    Step("onnx", write_onnx),
    Step("parity gate", parity_gate),
    Step("int8", write_int8, lambda opts: opts.int8),
    Step("int8 gate", gate_int8, lambda opts: opts.int8),
    Step("triton onnx", write_triton_onnx, lambda opts: opts.triton is not None),
    Step("tensorrt", build_tensorrt, lambda opts: opts.trt),
    Step("triton tensorrt", write_triton_tensorrt, lambda opts: opts.trt and opts.triton is not None),
)


def run_steps(job: ExportJob, steps: tuple[Step, ...] | None = None) -> ExportResult:
    """Runs the wanted steps of ``steps`` (default ``STEPS``) in order; a graph the parity gate did not pass
    never stays behind."""
    try:
        for step in STEPS if steps is None else steps:
            if step.wanted(job.opts):
                step.run(job)
    finally:
        job.folder.staged_onnx.unlink(missing_ok=True)
    return job.result()


def _size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.0f} KiB"
