"""One place that prints to the user: warnings are one line each, and only rank 0 speaks."""

from __future__ import annotations

import os
import warnings

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


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      file: object = None, line: str | None = None) -> None:
    """``warnings.showwarning`` replacement: the message's first sentence on one line, no source line."""
    text = " ".join(str(message).split())
    first = text.split(". ")[0].rstrip(".")
    warn(f"{first} ({category.__name__})")


def route_warnings() -> None:
    """Print every library warning (torch, PIL, scikit-learn, ...) as one ``warning:`` line.

    Python's filters still decide whether a warning shows (by default once per call site);
    only its format changes: no file name, no source line.
    """
    warnings.showwarning = _one_line_warning
