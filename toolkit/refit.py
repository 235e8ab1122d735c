"""``finetune --refit``: choose the epoch count on validation, then train on train + validation.

As scikit-learn's ``refit=True`` after a search: with early stopping (``finetune.early_stop_patience``
> 0) a first run (``<run>/selection``) trains on the training split alone, monitored on the
validation split, and its best epoch is the epoch count; the run itself then trains on the
training and validation images together with that count, so small data sets do not lose their
validation images to the choice. Without early stopping the count is ``finetune.epochs`` and the
run trains on both splits at once. The selection run stays beside the model as the
record of the choice; ``toolkit evaluate`` on it gives validation-calibrated numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from toolkit.config import Recipe, replace
from toolkit.console import info
from toolkit.engine.checkpoint import Checkpoint
from toolkit.engine.run_folder import RunFolder
from toolkit.errors import ToolkitError

SELECTION = "selection"


def chosen_epochs(records: list[dict[str, Any]], patience: int, planned: int, metric: str = "knn_top1") -> int:
    """The epoch count to refit with: the best monitored epoch with early stopping, else ``planned``."""
    if patience <= 0:
        return planned
    scored = [(float(r[metric]), int(r["epoch"])) for r in records if r.get(metric) is not None and int(r["epoch"]) > 0]
    if not scored:
        raise ToolkitError(f"finetune.refit: the selection run recorded no validation {metric}; "
                           "it needs a validation split (data.val_fraction > 0 or a val/ folder)")
    best_value = max(value for value, _ in scored)
    return min(epoch for value, epoch in scored if value == best_value)  # the earliest of equal bests


def select_refit_epochs(recipe: Recipe, run_dir: Path, train: Callable[[Recipe, Path], Any]) -> Recipe:
    """Run (or reuse) the selection run and return the refit recipe: chosen epochs, no early stopping.

    Args:
        recipe: the fine-tuning recipe with ``finetune.refit = true``.
        run_dir: the refit run's folder; the selection run goes to ``run_dir/selection``.
        train: ``toolkit.finetune.finetune`` (passed in to keep this module below it).
    """
    ft = recipe.finetune
    if recipe.data.val_fraction <= 0 and not _has_val_folder(recipe):
        raise ToolkitError("finetune.refit needs a validation split to choose the epoch count on; "
                           "set data.val_fraction > 0 or add a val/ folder")
    if ft.early_stop_patience <= 0:
        # Nothing to choose: the epoch count is the recipe's (chosen on validation beforehand, e.g. with
        # benchmarks/finetune_validation.py), so train on train + validation at once.
        info(f"refit: finetune.epochs={ft.epochs} (no early stopping to choose it); training on train + validation")
        return recipe
    selection_dir = Path(run_dir) / SELECTION
    selection_recipe = replace(recipe, **{"finetune.refit": False})
    if _complete(selection_dir):
        info(f"refit: reusing the finished selection run {selection_dir}")
    else:
        info(f"refit: selection run on the training split into {selection_dir}")
        train(selection_recipe, selection_dir)
    epochs = chosen_epochs(RunFolder(selection_dir).read_metrics(), ft.early_stop_patience, ft.epochs)
    info(f"refit: {epochs} epochs chosen on the validation split; training again on train + validation in {run_dir}")
    init = Checkpoint.load(selection_dir).recipe.finetune.init  # the resolved init of the selection run
    return replace(recipe, **{"finetune.epochs": epochs, "finetune.early_stop_patience": 0, "finetune.init": init})


def _complete(run_dir: Path) -> bool:
    try:
        ckpt = Checkpoint.load(run_dir)
    except ToolkitError:
        return False
    records = RunFolder(run_dir).read_metrics()
    return not ckpt.training.mid_epoch and bool(records) and (
        ckpt.epoch >= ckpt.recipe.finetune.epochs or RunFolder(run_dir).last.exists())


def _has_val_folder(recipe: Recipe) -> bool:
    root = Path(recipe.data.path).expanduser()
    return root.is_dir() and (root / "val").is_dir()
