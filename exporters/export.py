"""``toolkit export``: checkpoint -> validated ``encoder.onnx`` (+ int8, + TensorRT engine).

Steps, each printed as it finishes:

1. ONNX export with metadata (``exporters.onnx_export``), checker and shape inference;
2. the parity gate against PyTorch fp32 (``exporters.parity``), run on ONNX Runtime's CPU
   provider; on failure the graph is kept as ``encoder.rejected.onnx`` for inspection and the
   export fails;
3. ``encoder.json`` (the same metadata as in the ONNX);
4. optionally ``encoder.int8.onnx`` (``--int8 --calib-data DIR``, ``exporters.int8``), gated: when
   its minimum cosine to the fp32 embeddings on held-out images is below ``--int8-min-cosine``
   (default 0.999) the int8 file is renamed ``encoder.int8.onnx.rejected`` and the export fails
   (exit 2; the fp32 model stays), unless ``--int8-accept``;
5. optionally a Triton Inference Server model repository (``--triton REPO``,
   ``exporters.triton_repository``): ``REPO/<name>`` for ONNX Runtime, and ``REPO/<name>_trt``
   beside it when ``--trt`` built an engine;
6. optionally ``encoder.engine`` (``--trt``, ``exporters.tensorrt_engine.build_engine``). Without
   TensorRT or a CUDA device this step fails with exit code 2 and says the ONNX was written.

The default output folder is ``<the checkpoint's folder>/export``: for a run folder
``runs/x``, ``runs/x/export``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from exporters import metadata, parity
from exporters.metadata import ModelInfo
from exporters.onnx_export import DEFAULT_OPSET, export_onnx
from exporters.int8 import Int8Report
from exporters.runtime import OnnxBackend, TorchBackend
from toolkit.console import info as say
from toolkit.console import warn
from toolkit.engine.run_folder import RunFolder, atomic_path
from toolkit.errors import ToolkitError
from toolkit.out_paths import ensure_out_dir, write_error

DEFAULT_MAX_BATCH = 256
OPT_BATCH = 64  # the TensorRT profile's tuned batch (clipped to --max-batch)
INT8_MIN_COSINE = 0.999  # the int8 gate: minimum cosine to fp32 on held-out images
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


def default_out_dir(checkpoint_path: str | Path) -> Path:
    """``<run folder>/export`` for a run folder or a checkpoint file inside one."""
    path = Path(checkpoint_path)
    return RunFolder(path if path.is_dir() else path.parent).export_dir


def _check_options(trt: bool, fp16: bool, int8: bool, calib_data: str | Path | None, max_batch: int) -> None:
    if fp16 and not trt:
        raise ToolkitError("--fp16 sets the TensorRT engine's precision; add --trt (the ONNX is always fp32)")
    if int8 and calib_data is None:
        raise ToolkitError("--int8 needs --calib-data DIR: a folder (or list) of representative images to calibrate on")
    if calib_data is not None and not int8:
        raise ToolkitError("--calib-data is only used with --int8")
    if max_batch < 2:
        raise ToolkitError(f"--max-batch {max_batch}: must be at least 2")


def export_checkpoint(checkpoint_path: str | Path, out: str | Path | None = None, *, trt: bool = False,
                      fp16: bool = False, opset: int = DEFAULT_OPSET, max_batch: int = DEFAULT_MAX_BATCH,
                      int8: bool = False, calib_data: str | Path | None = None, data: str | Path | None = None,
                      threads: int | None = None, force: bool = False, int8_min_cosine: float = INT8_MIN_COSINE,
                      int8_accept: bool = False, triton: str | Path | None = None,
                      triton_name: str = "encoder") -> ExportResult:
    """Exports a pretrain or finetune checkpoint; see the module docstring for the steps.

    Args:
        checkpoint_path: a ``checkpoint.pt`` or a run folder holding one.
        out: output folder (default ``default_out_dir(checkpoint_path)``).
        trt: also build ``encoder.engine`` with TensorRT.
        fp16: TensorRT engine in mixed fp16 (the l2 normalisation stays fp32).
        opset: ONNX opset.
        max_batch: the largest batch of the TensorRT profile (and of the export's batch bound).
        int8: also write ``encoder.int8.onnx`` calibrated on ``calib_data``.
        calib_data: folder, CSV or list of calibration images.
        data: folder, CSV or list of images for the parity check on real images.
        threads: ONNX Runtime / torch CPU threads for the checks (None = all cores).
        force: replace an ``encoder.onnx`` in ``out`` that was exported from another checkpoint.
        int8_min_cosine: the int8 gate's minimum cosine to fp32 (see the module docstring).
        int8_accept: keep an int8 model that fails the gate (with a warning).
        triton: also write a Triton model repository in this folder.
        triton_name: the model's name (folder) in the repository.

    Raises:
        ToolkitError: bad options, not a toolkit checkpoint, a failed export, validation or
            parity gate; TensorRT unavailable with ``trt`` (after the ONNX is written).
    """
    from toolkit.engine.checkpoint import Checkpoint

    _check_options(trt, fp16, int8, calib_data, max_batch)
    ckpt = Checkpoint.load(checkpoint_path)
    info = metadata.info_from_checkpoint(ckpt)
    encoder = ckpt.encoder()
    out_dir = ensure_out_dir(Path(out) if out is not None else default_out_dir(checkpoint_path))
    onnx_path = out_dir / "encoder.onnx"
    if not force:
        _refuse_unrelated(onnx_path, Path(ckpt.path or checkpoint_path), out_dir == default_out_dir(checkpoint_path))
    with atomic_path(onnx_path) as staged:  # renamed to encoder.onnx only once the parity gate passed
        info = export_onnx(encoder, info, staged, opset=opset, max_batch=max(max_batch, 2))
        say(f"exported {ckpt.kind} checkpoint {ckpt.path} -> ONNX opset {opset}; checker and shape inference passed")
        cases = _parity_gate(encoder, info, staged, data, threads)
    try:
        metadata.write_json(info, out_dir / "encoder.json")
    except OSError as exc:
        raise write_error(out_dir / "encoder.json", exc) from None
    result = ExportResult(out_dir, onnx_path, info, cases, files=[onnx_path, out_dir / "encoder.json"])
    threshold = "none stored (no eval.json beside the checkpoint)" if info.threshold is None else f"{info.threshold:.4f}"
    unknown = "" if info.unknown_threshold is None else f", unknown threshold {info.unknown_threshold:.4f}"
    say(f"wrote {onnx_path} ({_size(onnx_path)}) and encoder.json; "
        f"input [batch, {', '.join(map(str, info.input_chw))}], embedding dim {info.embedding_dim}, pair threshold "
        f"{threshold}{unknown}")

    if int8:
        result.int8 = _export_int8(onnx_path, out_dir / "encoder.int8.onnx", info, calib_data, threads)
        _int8_gate(result.int8, int8_min_cosine, int8_accept)
        result.files.append(result.int8.path)
    if triton is not None:
        from exporters.triton_repository import write_onnx_model

        folder = write_onnx_model(triton, triton_name, onnx_path, max(max_batch, 2))
        result.files.append(folder / "config.pbtxt")
        say(f"wrote Triton model {folder} (onnxruntime_onnx, max_batch_size {max(max_batch, 2)}, dynamic batching)")
    if trt:
        result.engine = _build_trt(onnx_path, out_dir, fp16, max_batch)
        result.files.append(out_dir / "encoder.engine")
        if triton is not None:
            from exporters.triton_repository import write_tensorrt_model

            folder = write_tensorrt_model(triton, f"{triton_name}_trt", out_dir / "encoder.engine", onnx_path, max_batch)
            result.files.append(folder / "config.pbtxt")
            say(f"wrote Triton model {folder} (tensorrt_plan, max_batch_size {max_batch})")
    return result


def _refuse_unrelated(onnx_path: Path, checkpoint_path: Path, own_folder: bool) -> None:
    """Refuse to replace an ``encoder.onnx`` exported from another checkpoint (``--force`` allows it).

    Re-exporting into the checkpoint's own ``export/`` folder, or over a model exported from
    the same checkpoint file, is an update and always allowed.

    Raises:
        ToolkitError: ``onnx_path`` exists and belongs to another (or an unknown) checkpoint.
    """
    if own_folder or not onnx_path.exists():
        return
    from exporters.onnx_export import read_info

    try:
        source = read_info(onnx_path).checkpoint
    except ToolkitError:
        source = ""
    if source and Path(source).resolve() == checkpoint_path.resolve():
        return
    origin = f"exported from {source}" if source else "not exported from this checkpoint"
    raise ToolkitError(f"--out {onnx_path.parent}: it already holds encoder.onnx ({origin}); give another --out, "
                       f"or --force to replace it")


def _size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.0f} KiB"


def _parity_gate(encoder: nn.Module, info: ModelInfo, staged: Path, data: str | Path | None,
                 threads: int | None) -> list[parity.ParityCase]:
    """Runs and prints the parity cases; a failure keeps the graph as ``encoder.rejected.onnx`` and raises."""
    reference = TorchBackend(encoder, info, precision="fp32", device="cpu", threads=threads)
    candidate = OnnxBackend(staged, threads=threads, device="cpu", info=info)
    cases = parity.check_parity(reference, candidate, parity.parity_batches(info, data))
    for case in cases:
        say(case.line())
    failed = [c for c in cases if not c.passed]
    if failed:
        rejected = staged.parent / "encoder.rejected.onnx"
        with atomic_path(rejected) as tmp:
            os.replace(staged, tmp)
        worst = min(failed, key=lambda c: c.min_cosine)
        raise ToolkitError(
            f"parity gate failed: ONNX Runtime vs PyTorch on {worst.name} images, batch {worst.batch}: min cosine "
            f"{worst.min_cosine:.6f} (need >= {parity.MIN_COSINE}), max |diff| {worst.max_abs_diff:.2e} (need <= "
            f"{parity.MAX_ABS_DIFF:g}); the graph is kept as {rejected}"
        )
    return cases


def _export_int8(onnx_path: Path, int8_path: Path, info: ModelInfo, calib_data: str | Path | None,
                 threads: int | None) -> Int8Report:
    from exporters.int8 import calibration_set, int8_report, quantize_int8

    images, check, held_out = calibration_set(info, calib_data)  # type: ignore[arg-type]  # checked in _check_options
    quantize_int8(onnx_path, int8_path, images)
    report = int8_report(onnx_path, int8_path, check, len(images), held_out, threads)
    on = f"{report.check_images} held-out images" if held_out else f"{report.check_images} calibration images"
    say(f"wrote {int8_path} (static int8 QDQ, {report.calibration_images} calibration images): cosine to fp32 on {on} "
        f"min {report.min_cosine:.5f}, mean {report.mean_cosine:.5f}; CPU speed-up x{report.speedup:.2f} "
        f"(ONNX Runtime, batch {min(len(check), 32)})")
    return report


def _int8_gate(report: Int8Report, min_cosine: float, accept: bool) -> None:
    """Reject (rename to ``.rejected`` and fail) an int8 model that agrees with fp32 below ``min_cosine``."""
    if report.min_cosine >= min_cosine:
        say(f"int8 gate passed: min cosine {report.min_cosine:.5f} >= {min_cosine:g}")
        return
    on = "held-out images" if report.held_out else "calibration images (too few images to hold any out)"
    if accept:
        warn(f"int8 model kept by --int8-accept although its min cosine {report.min_cosine:.5f} on {on} is below "
             f"--int8-min-cosine {min_cosine:g}")
        return
    rejected = report.path.with_name(report.path.name + ".rejected")
    os.replace(report.path, rejected)
    raise ToolkitError(f"int8 gate failed: min cosine to fp32 {report.min_cosine:.5f} on {report.check_images} {on} is "
                       f"below --int8-min-cosine {min_cosine:g}; the int8 model is kept as {rejected}, the fp32 "
                       f"{report.path.with_name('encoder.onnx')} is fine (pass --int8-accept to keep int8 anyway)")


def _build_trt(onnx_path: Path, out_dir: Path, fp16: bool, max_batch: int) -> dict[str, object]:
    from exporters.tensorrt_engine import build_engine, tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    if reason is not None:
        raise ToolkitError(f"--trt: cannot build a TensorRT engine: {reason}; the ONNX was written to {onnx_path}")
    engine = build_engine(onnx_path, out_dir / "encoder.engine", min_batch=1, opt_batch=min(OPT_BATCH, max_batch),
                          max_batch=max_batch, fp16=fp16, workspace_bytes=WORKSPACE_BYTES,
                          timing_cache_path=out_dir / "timing.cache")
    say(f"wrote {engine['engine']} ({engine['precision']}, TensorRT {engine['tensorrt_version']} on {engine['gpu']}, "
        f"batch 1..{max_batch}, built in {engine['build_seconds']} s); trtexec equivalent in {out_dir / 'trtexec.sh'}")
    return engine
