"""The one-screen summary printed at the end of a training run (pretrain and finetune alike)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from toolkit.console import console, info, is_rank_zero


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def print_run_summary(title: str, records: list[dict[str, Any]], rows: list[tuple[str, Any]]) -> None:
    """A table of the first (epoch 0, at initialisation) and last epoch's metrics plus extra rows."""
    if not is_rank_zero() or not records:
        return
    first, last = records[0], records[-1]
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column(f"epoch {first['epoch']}", justify="right")
    table.add_column(f"epoch {last['epoch']}", justify="right")
    for key in last:
        if key in ("epoch", "img_per_s"):
            continue
        table.add_row(key, _fmt(first.get(key)), _fmt(last.get(key)))
    rates = [r["img_per_s"] for r in records if r.get("img_per_s")]
    if rates:
        table.add_row("img_per_s (mean)", "", _fmt(sum(rates) / len(rates)))
    for name, value in rows:
        table.add_row(name, "", _fmt(value))
    console.print(table)


def finish_run(title: str, records: list[dict[str, Any]], rows: list[tuple[str, Any]], features: str) -> None:
    """The end of a run: the summary table, then the kNN accuracy at initialisation and at the end.

    Args:
        features: what the kNN monitor classified, for the line ("", "of the embedding").
    """
    if not is_rank_zero() or not records:
        return
    print_run_summary(title, records, rows)
    first, last = records[0].get("knn_top1"), records[-1].get("knn_top1")
    if first is not None and last is not None:
        info(f"kNN top-1{features}: {first:.4f} at initialisation -> {last:.4f} after {records[-1]['epoch']} epochs")
