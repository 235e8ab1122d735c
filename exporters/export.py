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
   (exit 2; the fp32 model stays), unless ``--int8-accept``; the gate also reports how many
   pair decisions of the held-out images flip at the model's pair threshold;
5. optionally a Triton Inference Server model repository (``--triton REPO``,
   ``exporters.triton_repository``): ``REPO/<name>`` for ONNX Runtime, and ``REPO/<name>_trt``
   beside it when ``--trt`` built an engine;
6. optionally ``encoder.engine`` (``--trt``, ``exporters.tensorrt_engine.build_engine``). Without
   TensorRT or a CUDA device this step fails with exit code 2 and says the ONNX was written.

Before step 1 every option is checked (``exporters.export_checks``) and the thresholds to ship
are chosen (``exporters.eval_link``: only an ``eval.json`` of these weights, calibrated on
validation). Once the new ``encoder.onnx`` is in place, every file derived from the previous one
(int8, rejected graphs, TensorRT engine) is removed (``ExportFolder.remove_derived``), so no stale
artefact sits beside the new model. A refused export leaves no empty output folder.

The default output folder is ``<the checkpoint's folder>/export``: for a run folder
``runs/x``, ``runs/x/export``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from exporters import metadata, parity
from exporters.eval_link import export_thresholds
from exporters.export_options import ExportOptions
from exporters.export_folder import ExportFolder
from exporters.int8 import Int8Report
from exporters.int8_step import export_int8, int8_gate
from exporters.metadata import ModelInfo
from exporters.onnx_export import export_onnx
from exporters.runtime import OnnxBackend, TorchBackend
from toolkit.console import info as say
from toolkit.engine.checkpoint import Checkpoint
from toolkit.engine.run_folder import RunFolder, atomic_path
from toolkit.errors import ToolkitError
from toolkit.out_paths import ensure_out_dir, write_error

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


def default_out_dir(checkpoint_path: str | Path) -> Path:
    """``<run folder>/export`` for a run folder or a checkpoint file inside one."""
    path = Path(checkpoint_path)
    return RunFolder(path if path.is_dir() else path.parent).export_dir


def export_checkpoint(checkpoint_path: str | Path, out: str | Path | None = None, **options: object) -> ExportResult:
    """Exports a pretrain or finetune checkpoint; see the module docstring for the steps.

    Args:
        checkpoint_path: a ``checkpoint.pt`` or a run folder holding one.
        out: output folder (default ``default_out_dir(checkpoint_path)``).
        **options: the fields of ``ExportOptions`` (``exporters.export_options``).

    Raises:
        ToolkitError: bad options, not a toolkit checkpoint, an ``eval.json`` of other weights or
            with test-chosen thresholds, a failed export, validation or parity gate; TensorRT
            unavailable with ``trt`` (after the ONNX is written).
    """
    opts = ExportOptions(**options)  # type: ignore[arg-type]
    opts.check(Path(out) if out is not None else None)
    ckpt = Checkpoint.load(checkpoint_path)
    info = metadata.info_from_checkpoint(ckpt, export_thresholds(ckpt, opts.allow_test_thresholds))
    encoder = ckpt.encoder()
    out_dir = Path(out) if out is not None else default_out_dir(checkpoint_path)
    created = not out_dir.exists()
    ensure_out_dir(out_dir)
    try:
        if not opts.force:
            _refuse_unrelated(ExportFolder(out_dir).onnx, Path(ckpt.path or checkpoint_path),
                              out_dir == default_out_dir(checkpoint_path))
        return _export(ckpt, encoder, info, ExportFolder(out_dir), opts)
    except BaseException:
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # nothing was written: leave no empty folder
        raise


def _export(ckpt: Checkpoint, encoder: nn.Module, info: ModelInfo, folder: ExportFolder,
            opts: ExportOptions) -> ExportResult:
    """The steps, in order, once the options are checked and the output folder exists."""
    max_batch = max(opts.max_batch, 2)
    with atomic_path(folder.onnx) as staged:  # renamed to encoder.onnx only once the parity gate passed
        info = export_onnx(encoder, info, staged, opset=opts.opset, max_batch=max_batch)
        say(f"exported {ckpt.kind} checkpoint {ckpt.path} -> ONNX opset {info.opset}; checker and shape inference "
            "passed")
        cases = _parity_gate(encoder, info, staged, opts.data, opts.threads)
    stale = folder.remove_derived()
    if stale:
        say(f"removed {len(stale)} file(s) derived from the previous encoder.onnx: {', '.join(p.name for p in stale)}")
    try:
        metadata.write_json(info, folder.json)
    except OSError as exc:
        raise write_error(folder.json, exc) from None
    result = ExportResult(folder.path, folder.onnx, info, cases, files=[folder.onnx, folder.json])
    threshold = "none stored (no eval.json beside the checkpoint)" if info.threshold is None else f"{info.threshold:.4f}"
    unknown = "" if info.unknown_threshold is None else f", unknown threshold {info.unknown_threshold:.4f}"
    say(f"wrote {folder.onnx} ({_size(folder.onnx)}) and encoder.json; "
        f"input [batch, {', '.join(map(str, info.input_chw))}], embedding dim {info.embedding_dim}, pair threshold "
        f"{threshold}{unknown}")

    if opts.int8:
        assert opts.calib_data is not None  # checked by check_export_options
        result.int8 = export_int8(folder.onnx, folder.int8, info, opts.calib_data, opts.threads)
        int8_gate(result.int8, opts.int8_min_cosine, opts.int8_accept)
        result.files.append(result.int8.path)
    if opts.triton is not None:
        from exporters.triton_repository import write_onnx_model

        model_dir = write_onnx_model(opts.triton, opts.triton_name, folder.onnx, max_batch)
        result.files.append(model_dir / "config.pbtxt")
        say(f"wrote Triton model {model_dir} (onnxruntime_onnx, max_batch_size {max_batch}, dynamic batching)")
    if opts.trt:
        result.engine = _build_trt(folder, opts.fp16, opts.max_batch)
        result.files.append(folder.engine)
        if opts.triton is not None:
            from exporters.triton_repository import write_tensorrt_model

            model_dir = write_tensorrt_model(opts.triton, f"{opts.triton_name}_trt", folder.engine, folder.onnx,
                                             opts.max_batch)
            result.files.append(model_dir / "config.pbtxt")
            say(f"wrote Triton model {model_dir} (tensorrt_plan, max_batch_size {opts.max_batch})")
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
        rejected = staged.parent / ExportFolder.REJECTED_ONNX
        with atomic_path(rejected) as tmp:
            os.replace(staged, tmp)
        worst = min(failed, key=lambda c: c.min_cosine)
        raise ToolkitError(
            f"parity gate failed: ONNX Runtime vs PyTorch on {worst.name} images, batch {worst.batch}: min cosine "
            f"{worst.min_cosine:.6f} (need >= {parity.MIN_COSINE}), max |diff| {worst.max_abs_diff:.2e} (need <= "
            f"{parity.MAX_ABS_DIFF:g}); the graph is kept as {rejected}"
        )
    return cases


def _build_trt(folder: ExportFolder, fp16: bool, max_batch: int) -> dict[str, object]:
    from exporters.tensorrt_engine import build_engine, tensorrt_unavailable_reason

    reason = tensorrt_unavailable_reason()
    if reason is not None:
        raise ToolkitError(f"--trt: cannot build a TensorRT engine: {reason}; the ONNX was written to {folder.onnx}")
    engine = build_engine(folder.onnx, folder.engine, min_batch=1, opt_batch=min(OPT_BATCH, max_batch),
                          max_batch=max_batch, fp16=fp16, workspace_bytes=WORKSPACE_BYTES,
                          timing_cache_path=folder.timing_cache)
    say(f"wrote {engine['engine']} ({engine['precision']}, TensorRT {engine['tensorrt_version']} on {engine['gpu']}, "
        f"batch 1..{max_batch}, built in {engine['build_seconds']} s); trtexec equivalent in "
        f"{folder.path / ExportFolder.TRTEXEC}")
    return engine
