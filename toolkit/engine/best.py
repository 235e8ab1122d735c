"""Keep the best checkpoint by the validation monitor, and stop early when it stops improving.

The training loop saves ``checkpoint.pt`` after every epoch (needed for exact resume). This
helper copies it to ``best.pt`` whenever the monitored validation metric (kNN top-1 on the
validation split, higher is better) improves, and says when ``patience`` epochs have passed
since the last improvement (early stopping, e.g. Goodfellow et al. 2016, Sec. 7.8). At the end
of a run ``finish`` makes the best one the run's ``checkpoint.pt`` (what evaluate and export
read) and keeps the last epoch's state as ``last.pt``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from toolkit.console import info
from toolkit.engine.run_folder import RunFolder
from toolkit.io import atomic_path


class BestCheckpoint:
    """Tracks the best validation value of ``metric`` over a run's epoch records.

    Args:
        run_dir: the run folder holding ``checkpoint.pt``.
        patience: epochs without improvement before stopping; 0 never stops.
        metric: the record key to maximise.
    """

    def __init__(self, run_dir: Path, patience: int, metric: str = "knn_top1") -> None:
        self.run_dir, self.patience, self.metric = run_dir, patience, metric
        self.folder = RunFolder(run_dir)
        self.best_value: float | None = None
        self.best_epoch: int | None = None

    def resume_from(self, records: list[dict[str, Any]]) -> None:
        """Rebuild the best value from the ``metrics.jsonl`` records of a resumed run."""
        for record in records:
            value = record.get(self.metric)
            if value is not None and (self.best_value is None or value > self.best_value):
                self.best_value, self.best_epoch = float(value), int(record["epoch"])

    def update(self, record: dict[str, Any]) -> bool:
        """Call after ``checkpoint.pt`` of ``record["epoch"]`` was saved; True when it is the new best."""
        value = record.get(self.metric)
        if value is None or (self.best_value is not None and value <= self.best_value):
            return False
        self.best_value, self.best_epoch = float(value), int(record["epoch"])
        with atomic_path(self.folder.best) as tmp:
            shutil.copyfile(self.folder.checkpoint, tmp)
        return True

    def should_stop(self, epoch: int, monitored: bool) -> bool:
        """True when ``patience`` > 0 epochs have passed since the best one (checked on monitored epochs)."""
        return (self.patience > 0 and monitored and self.best_epoch is not None
                and epoch - self.best_epoch >= self.patience)

    def finish(self, last_epoch: int) -> None:
        """Make the best epoch's checkpoint the run's ``checkpoint.pt``; the last state stays as ``last.pt``."""
        best = self.folder.best
        if self.best_epoch is None or not best.is_file():
            return
        if self.best_epoch == last_epoch:
            best.unlink()
            return
        os.replace(self.folder.checkpoint, self.folder.last)
        os.replace(best, self.folder.checkpoint)
        info(f"checkpoint.pt is epoch {self.best_epoch}, the best validation {self.metric} ({self.best_value:.4f}); "
             f"the state after epoch {last_epoch} is kept as {self.folder.LAST}")
