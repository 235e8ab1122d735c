"""One place that prints to the user: warnings are one line each, and only rank 0 speaks."""

from __future__ import annotations

import os

from rich.console import Console
from rich.markup import escape

console = Console(stderr=True, highlight=False, soft_wrap=True)


def is_rank_zero() -> bool:
    """True outside torch.distributed and on its rank 0 (read from the launcher's environment)."""
    return int(os.environ.get("RANK", "0")) == 0


def info(message: str) -> None:
    """Print a line of progress information (rank 0 only)."""
    if is_rank_zero():
        console.print(message, markup=False)


def warn(message: str) -> None:
    """Print one warning line (rank 0 only)."""
    if is_rank_zero():
        console.print(f"[yellow]warning:[/yellow] {escape(message)}", emoji=False)
