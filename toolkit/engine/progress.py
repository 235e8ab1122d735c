"""The training progress bar: one rich bar per epoch with loss, lr and images per second."""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from toolkit.console import console


class EpochProgress:
    """Context manager around a rich ``Progress``; a no-op on ranks other than 0."""

    def __init__(self, epochs: int, enabled: bool = True) -> None:
        self.epochs, self.enabled = epochs, enabled
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def __enter__(self) -> EpochProgress:
        if self.enabled:
            self.progress = Progress(
                TextColumn("epoch {task.fields[epoch]}/{task.fields[epochs]}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}  lr {task.fields[lr]:.3g}  {task.fields[rate]:.0f} img/s"),
                TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True)
            self.progress.__enter__()
        return self

    def start_epoch(self, epoch: int, steps: int, completed: int = 0) -> None:
        if self.progress is not None:
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task("train", total=steps, completed=completed, epoch=epoch,
                                               epochs=self.epochs, loss=float("nan"), lr=0.0, rate=0.0)

    def update(self, completed: int, **fields: Any) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, completed=completed, **fields)

    def end_epoch(self) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.__exit__(*exc)
