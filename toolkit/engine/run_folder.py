"""The files of a run folder besides the checkpoint: ``metrics.jsonl`` and ``curves.png``."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any


def default_run_dir(recipe_name: str, root: Path = Path("runs")) -> Path:
    """``runs/<recipe>-<timestamp>`` (local time, to the second)."""
    return root / f"{recipe_name}-{time.strftime('%Y%m%d-%H%M%S')}"


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every epoch's record of a run, in order (empty when the run has none yet)."""
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Append one epoch's record as a JSON line (non-finite floats become null)."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
    with open(run_dir / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps(clean) + "\n")


def truncate_metrics(run_dir: Path, last_epoch: int) -> None:
    """Drop records after ``last_epoch`` (written by a run that died before its checkpoint)."""
    kept = [r for r in read_metrics(run_dir) if r["epoch"] <= last_epoch]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))


def plot_curves(records: list[dict[str, Any]], path: Path) -> None:
    """Loss, z_std against 1/sqrt(d) and kNN accuracy per epoch, side by side (cf. the paper's Figure 2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("loss", "training loss")]
    if any("z_std" in r for r in records):
        panels.append(("z_std", "std of l2-normalised z"))
    if any(r.get("knn_top1") is not None for r in records):
        panels.append(("knn_top1", "kNN top-1 accuracy"))
    if any("active_fraction" in r for r in records):
        panels.append(("active_fraction", "active pairs / triplets"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (key, title) in zip(axes[0], panels):
        points = [(r["epoch"], r[key]) for r in records if r.get(key) is not None]
        if points:
            xs, ys = zip(*points)
            ax.plot(xs, ys, marker="o", markersize=3)
        if key == "z_std" and records and records[-1].get("z_std_ref"):
            ax.axhline(records[-1]["z_std_ref"], color="gray", linestyle="--", label="1/sqrt(d)")
            ax.set_ylim(bottom=0)
            ax.legend()
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
