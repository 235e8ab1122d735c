"""A run folder and everything written into it.

Layout of a training run (``toolkit pretrain`` / ``toolkit finetune``)::

    recipe.toml      the resolved recipe (rewritten on resume)
    metrics.jsonl    one JSON record per epoch (epoch 0 = at initialisation)
    checkpoint.pt    the ``Checkpoint`` (``toolkit.engine.checkpoint``), rewritten atomically every epoch
    best.pt, last.pt the best validation epoch's checkpoint, and the last epoch's once the best is checkpoint.pt
    curves.png       loss, z_std and kNN accuracy per epoch
    eval.json        written by ``toolkit evaluate``
    export/          written by ``toolkit export``
    .lock            the OS lock (``fcntl.flock``) of the process writing the run

A study folder holds ``study.toml``, ``study.json``, ``report.md`` and one run folder per variant.

Every file the toolkit writes goes through ``toolkit.io.atomic_path``: a temporary file beside the
target (``.NAME.tmp-<pid>``), fsync, then ``os.replace``, so a crash (even kill -9) leaves the old
file or the new one, never a torn one. Temporary files of a dead process are removed by the next run.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from toolkit.console import warn
from toolkit.engine.curves import plot_curves
from toolkit.errors import ToolkitError
from toolkit.io import remove_stale_temps, write_text_atomic


def recipe_text(recipe: Any) -> str:
    """The fully resolved recipe as TOML (what ``recipe.toml`` holds)."""
    import tomli_w

    from toolkit.config import recipe_to_dict

    return tomli_w.dumps(recipe_to_dict(recipe))


def default_run_dir(recipe_name: str, root: Path = Path("runs")) -> Path:
    """``runs/<recipe>-<timestamp>`` (local time, to the second)."""
    return root / f"{recipe_name}-{time.strftime('%Y%m%d-%H%M%S')}"


class RunFolder:
    """The files of one run (see the module docstring) and the lock of the process writing them."""

    RECIPE = "recipe.toml"
    METRICS = "metrics.jsonl"
    CHECKPOINT = "checkpoint.pt"
    BEST = "best.pt"
    LAST = "last.pt"
    CURVES = "curves.png"
    EVAL = "eval.json"
    EXPORT = "export"
    LOCK = ".lock"
    STUDY_RECIPE = "study.toml"
    STUDY_JSON = "study.json"
    STUDY_REPORT = "report.md"
    STUDY_RUN = "study_run.json"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # paths
    @property
    def recipe(self) -> Path:
        return self.path / self.RECIPE

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def checkpoint(self) -> Path:
        return self.path / self.CHECKPOINT

    @property
    def best(self) -> Path:
        """The best validation epoch's checkpoint while a run trains (``toolkit.engine.best``)."""
        return self.path / self.BEST

    @property
    def last(self) -> Path:
        """The last epoch's state when the best epoch became ``checkpoint.pt``."""
        return self.path / self.LAST

    @property
    def curves(self) -> Path:
        return self.path / self.CURVES

    @property
    def eval_json(self) -> Path:
        return self.path / self.EVAL

    @property
    def export_dir(self) -> Path:
        return self.path / self.EXPORT

    def holds_run(self) -> bool:
        """Whether the folder already holds (part of) a training run."""
        return any((self.path / name).exists() for name in (self.CHECKPOINT, self.RECIPE, self.METRICS))

    # checks and the lock
    def check_usable(self) -> None:
        """One-line errors for a path that cannot be a run folder (an existing file)."""
        if self.path.exists() and not self.path.is_dir():
            raise ToolkitError(f"--out {self.path} is an existing file, not a folder; give a folder for the run")

    def lock(self) -> None:
        """Take the OS lock of this folder for this process (released at exit, kill -9 included).

        Raises:
            ToolkitError: another process holds it (its pid is named), or the folder is not writable.
        """
        if self._lock_fd is not None:
            return
        self.check_usable()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / self.LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ToolkitError(f"{self.path}: cannot write the run folder ({exc.strerror or type(exc).__name__})") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ToolkitError(f"{self.path} is being written by another toolkit process (pid {holder}); "
                                   "wait for it to finish or choose another --out") from None
            raise ToolkitError(f"{self.path}: cannot lock the run folder ({exc.strerror})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        removed = remove_stale_temps(self.path)
        if removed:
            warn(f"removed {len(removed)} temporary file(s) left in {self.path} by a killed run")

    @contextlib.contextmanager
    def writing(self, is_main: bool = True, resuming: bool = False) -> Iterator[RunFolder]:
        """Hold the lock (rank 0) while a run writes the folder; a run that never began leaves no folder.

        Raises:
            ToolkitError: another process writes the folder, it cannot be written, or (for a new
                run) it already holds another run's files.
        """
        if not is_main:
            yield self
            return
        existed = self.path.is_dir()
        self.lock()
        try:
            if not resuming:
                self.refuse_other_run()
            yield self
        finally:
            self.unlock()
            if not existed and self.path.is_dir() and [p.name for p in self.path.iterdir()] == [self.LOCK]:
                (self.path / self.LOCK).unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    self.path.rmdir()

    def refuse_other_run(self) -> None:
        """A new run never overwrites another run's ``checkpoint.pt``, ``recipe.toml`` or ``metrics.jsonl``."""
        found = [n for n in (self.CHECKPOINT, self.RECIPE, self.METRICS) if (self.path / n).exists()]
        if found:
            raise ToolkitError(f"--out {self.path} already holds a run ({', '.join(found)}); continue it with "
                               f"--resume {self.path} or choose another --out")

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def begin(self, recipe_text: str, resuming: bool) -> None:
        """Lock the folder and, for a new run, refuse one that holds another run, then write ``recipe.toml``.

        On resume ``recipe.toml`` is rewritten with the recipe in force (the checkpoint's, with
        the allowed ``--set`` changes) and ``metrics.jsonl`` is kept.
        """
        self.lock()
        if not resuming:
            self.refuse_other_run()
            write_text_atomic(self.metrics, "")
        write_text_atomic(self.recipe, recipe_text)

    # metrics and curves
    def read_metrics(self) -> list[dict[str, Any]]:
        """Every epoch's record of the run, in order (empty when the run has none yet)."""
        if not self.metrics.is_file():
            return []
        return [json.loads(line) for line in self.metrics.read_text().splitlines() if line.strip()]

    def append_metrics(self, record: dict[str, Any]) -> None:
        """Append one epoch's record as a JSON line (non-finite floats become null)."""
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        with open(self.metrics, "a") as handle:
            handle.write(json.dumps(clean) + "\n")

    def truncate_metrics(self, last_epoch: int) -> None:
        """Drop records after ``last_epoch`` (written by a run that died before its checkpoint)."""
        kept = [r for r in self.read_metrics() if r["epoch"] <= last_epoch]
        write_text_atomic(self.metrics, "".join(json.dumps(r) + "\n" for r in kept))

    def plot_curves(self) -> None:
        plot_curves(self.read_metrics(), self.curves)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every epoch's record of the run in ``run_dir``."""
    return RunFolder(run_dir).read_metrics()
