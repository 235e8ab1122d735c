"""``toolkit export``: checkpoint -> validated ``encoder.onnx`` (+ int8, + TensorRT engine, + Triton repository).

``export_checkpoint`` checks every option first (``ExportOptions.check``: no model loaded, no
folder created), chooses the thresholds to ship (``exporters.eval_link``: only an ``eval.json`` of
these weights, calibrated on validation), refuses to replace a model exported from another
checkpoint (unless ``--force``), then runs the steps of ``exporters.export_steps`` in order
(ONNX, parity gate, int8, int8 gate, Triton, TensorRT), each printed as it finishes; each reads
the previous step's output from the export folder (``ExportFolder``) and writes its own. A
refused export leaves no empty output folder.

The default output folder is ``<the checkpoint's folder>/export``: for a run folder
``runs/x``, ``runs/x/export``.
"""

from __future__ import annotations

from pathlib import Path

from exporters import metadata
from exporters.eval_link import export_thresholds
from exporters.export_folder import ExportFolder
from exporters.export_options import ExportOptions
from exporters.export_steps import ExportJob, ExportResult, run_steps
from exporters.onnx_export import read_info
from toolkit.engine.checkpoint import Checkpoint
from toolkit.engine.run_folder import RunFolder
from toolkit.errors import ToolkitError
from toolkit.out_paths import ensure_out_dir


def default_out_dir(checkpoint_path: str | Path) -> Path:
    """``<run folder>/export`` for a run folder or a checkpoint file inside one."""
    path = Path(checkpoint_path)
    return RunFolder(path if path.is_dir() else path.parent).export_dir


def export_checkpoint(checkpoint_path: str | Path, out: str | Path | None = None,
                      options: ExportOptions = ExportOptions()) -> ExportResult:
    """Exports a pretrain or finetune checkpoint; see the module docstring for the steps.

    Args:
        checkpoint_path: a checkpoint file or a run folder holding one.
        out: output folder (default ``default_out_dir(checkpoint_path)``).
        options: what to export and how (built once by the CLI).

    Raises:
        ToolkitError: bad options, not a toolkit checkpoint, an ``eval.json`` of other weights or
            with test-chosen thresholds, a failed export, validation or parity gate; TensorRT
            unavailable with ``trt`` (after the ONNX is written).
    """
    options.check(Path(out) if out is not None else None)
    ckpt = Checkpoint.load(checkpoint_path)
    info = metadata.info_from_checkpoint(ckpt, export_thresholds(ckpt, options.allow_test_thresholds))
    encoder = ckpt.encoder()
    out_dir = Path(out) if out is not None else default_out_dir(checkpoint_path)
    created = not out_dir.exists()
    ensure_out_dir(out_dir)
    try:
        if not options.force:
            _refuse_unrelated(ExportFolder(out_dir).onnx, Path(ckpt.path or checkpoint_path),
                              out_dir == default_out_dir(checkpoint_path))
        return run_steps(ExportJob(ckpt, encoder, ExportFolder(out_dir), options, info))
    except BaseException:
        if created and out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # nothing was written: leave no empty folder
        raise


def _refuse_unrelated(onnx_path: Path, checkpoint_path: Path, own_folder: bool) -> None:
    """Refuse to replace an ``encoder.onnx`` exported from another checkpoint (``--force`` allows it).

    Re-exporting into the checkpoint's own ``export/`` folder, or over a model exported from
    the same checkpoint file, is an update and always allowed.

    Raises:
        ToolkitError: ``onnx_path`` exists and belongs to another (or an unknown) checkpoint.
    """
    if own_folder or not onnx_path.exists():
        return
    try:
        source = read_info(onnx_path).checkpoint
    except ToolkitError:
        source = ""
    if source and Path(source).resolve() == checkpoint_path.resolve():
        return
    origin = f"exported from {source}" if source else "not exported from this checkpoint"
    raise ToolkitError(f"--out {onnx_path.parent}: it already holds {onnx_path.name} ({origin}); give another --out, "
                       f"or --force to replace it")
