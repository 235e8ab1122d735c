"""Where a training command starts: a new run from a recipe, or ``--resume`` of an earlier one.

``toolkit pretrain``, ``toolkit finetune`` and ``toolkit study`` share the rule. A resumed run
takes the recipe stored in its checkpoint (a ``recipe.toml`` edited since is ignored, with a
warning) and must be a run of the same kind; ``--set`` and the shortcut flags may only change
the keys in ``RESUMABLE`` (more epochs, another device...), and a batch size only at an epoch
boundary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.config import Recipe, load_recipe, recipe_to_dict, replace, with_sets
from toolkit.console import warn
from toolkit.engine.checkpoint import Checkpoint
from toolkit.engine.run_folder import RunFolder, default_run_dir
from toolkit.errors import ToolkitError

RESUMABLE = ("train.epochs", "finetune.epochs", "train.device", "train.workers", "train.compile",
             "train.knn_every", "train.knn_k", "train.knn_t", "train.collapse_fraction")
BATCH_KEYS = {"pretrain": "train.batch_size", "finetune": "finetune.batch_size"}


@dataclass(frozen=True)
class RunStart:
    """The resolved recipe, the run folder and, when resuming, the loaded checkpoint."""

    recipe: Recipe
    run_dir: Path
    resume: Checkpoint | None


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def changed_keys(before: Recipe, after: Recipe) -> dict[str, tuple[Any, Any]]:
    """Dotted keys whose value differs between two recipes, with (before, after)."""
    a, b = _flat(recipe_to_dict(before)), _flat(recipe_to_dict(after))
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def check_resume_changes(kind: str, stored: Recipe, resolved: Recipe, ckpt: Checkpoint, where: Path) -> None:
    """Refuse changes a resumed run cannot take: architecture, data, loss, optimiser; a batch size mid-epoch."""
    changes = changed_keys(stored, resolved)
    fixed = {k: v for k, v in changes.items() if k not in RESUMABLE and k not in BATCH_KEYS.values()}
    if fixed:
        shown = ", ".join(f"{k} ({v[0]!r} -> {v[1]!r})" for k, v in list(fixed.items())[:4])
        raise ToolkitError(f"--resume {where}: {shown} cannot change on resume (the checkpoint was trained with them); "
                           f"only {', '.join(RESUMABLE)} can; start a new run with --out to change them")
    batch_key = BATCH_KEYS.get(kind)
    if batch_key in changes and ckpt.training.mid_epoch:
        before, after = changes[batch_key]
        raise ToolkitError(f"--resume {where}: {batch_key} cannot change from {before} to {after} in the middle of "
                           f"epoch {ckpt.epoch + 1} (the checkpoint stopped at step {ckpt.training.step_in_epoch}); "
                           "resume with the same batch size")


def _warn_if_recipe_file_differs(folder: RunFolder, stored: Recipe) -> None:
    if not folder.recipe.is_file():
        return
    try:
        on_disk = load_recipe(str(folder.recipe))
    except (ToolkitError, OSError, UnicodeDecodeError, ValueError):
        warn(f"{folder.recipe} is not a readable recipe; the checkpoint's recipe is used (and rewritten there)")
        return
    if changes := changed_keys(stored, on_disk):
        warn(f"{folder.recipe} was edited ({', '.join(list(changes)[:3])}); the checkpoint's recipe is used: "
             "change keys with --set instead")


def start_run(kind: str, recipe: str | None, shortcuts: Mapping[str, Any], sets: Sequence[str],
              out: Path | None, resume: Path | None, run_name: str = "{name}") -> RunStart:
    """Resolve a training command's recipe and run folder.

    Args:
        kind: "pretrain", "finetune" or "study"; a resumed checkpoint must be of this kind.
        recipe: the RECIPE argument (file or name), None for the default.
        shortcuts: flag values keyed by recipe key (None = flag not given).
        sets: ``--set section.key=value`` items.
        out: ``--out``; default ``runs/<run_name>-<timestamp>``.
        resume: ``--resume``: a run folder or its ``checkpoint.pt``.
        run_name: the default folder name, formatted with the recipe (``{name}``, ``{loss}``).
    """
    given = {k: v for k, v in shortcuts.items() if v is not None}
    if resume is None:
        resolved = load_recipe(recipe, shortcuts, list(sets))
        name = run_name.format(name=resolved.name, loss=resolved.finetune.loss)
        run_dir = Path(out) if out is not None else default_run_dir(name)
        RunFolder(run_dir).check_usable()
        return RunStart(resolved, run_dir, None)
    if recipe is not None:
        raise ToolkitError(f"--resume continues a run with its own recipe.toml; do not also give RECIPE {recipe}")
    if given.get("finetune.init") is not None:
        raise ToolkitError("--resume continues a run with the weights in its checkpoint; do not also give --init")
    run_dir = Path(resume).parent if Path(resume).is_file() else Path(resume)
    if out is not None and Path(out).resolve() != run_dir.resolve():
        raise ToolkitError(f"--resume writes into {run_dir}; do not also give --out {out}")
    ckpt = Checkpoint.load(resume)
    if ckpt.kind != kind:
        raise ToolkitError(f"--resume {resume}: this is a {ckpt.kind} run; use toolkit {ckpt.kind} --resume")
    stored = ckpt.recipe
    resolved = with_sets(replace(stored, **given) if given else stored, list(sets))
    check_resume_changes(kind, stored, resolved, ckpt, run_dir)
    _warn_if_recipe_file_differs(RunFolder(run_dir), stored)
    return RunStart(resolved, run_dir, ckpt)

