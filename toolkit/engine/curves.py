"""``curves.png`` of a run: loss, z_std against 1/sqrt(d), kNN accuracy and active pairs per epoch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from toolkit.io import atomic_path


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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
