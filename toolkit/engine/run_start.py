"""Where a training command starts: a new run from a recipe, or ``--resume DIR`` of an earlier one.

``toolkit pretrain`` and ``toolkit finetune`` share the rule: a resumed run takes the recipe it
stored in its checkpoint (``--set`` and the shortcut flags may still override keys, e.g. more
epochs or another device) and must be a run of the same kind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.engine import checkpoint
from toolkit.config import Recipe, load_recipe, recipe_from_dict, replace, with_sets
from toolkit.errors import ToolkitError
from toolkit.engine.run_folder import default_run_dir


@dataclass(frozen=True)
class RunStart:
    """The resolved recipe, the run folder and, when resuming, the loaded checkpoint."""

    recipe: Recipe
    run_dir: Path
    resume: dict[str, Any] | None


def start_run(kind: str, recipe: str | None, shortcuts: Mapping[str, Any], sets: Sequence[str],
              out: Path | None, resume: Path | None, run_name: str = "{name}") -> RunStart:
    """Resolve a training command's recipe and run folder.

    Args:
        kind: "pretrain" or "finetune"; a resumed checkpoint must be of this kind.
        recipe: the RECIPE argument (file or name), None for the default.
        shortcuts: flag values keyed by recipe key (None = flag not given).
        sets: ``--set section.key=value`` items.
        out: ``--out``; default ``runs/<run_name>-<timestamp>``.
        resume: ``--resume DIR``.
        run_name: the default folder name, formatted with the recipe (``{name}``, ``{loss}``).
    """
    given = {k: v for k, v in shortcuts.items() if v is not None}
    if resume is None:
        resolved = load_recipe(recipe, shortcuts, list(sets))
        name = run_name.format(name=resolved.name, loss=resolved.finetune.loss)
        return RunStart(resolved, out or default_run_dir(name), None)
    if recipe is not None:
        raise ToolkitError(f"--resume continues a run with its own recipe.toml; do not also give RECIPE {recipe}")
    if out is not None and Path(out).resolve() != Path(resume).resolve():
        raise ToolkitError(f"--resume writes into {resume}; do not also give --out {out}")
    ckpt = checkpoint.load(resume)
    if ckpt["kind"] != kind:
        raise ToolkitError(f"--resume {resume}: this is a {ckpt['kind']} run; use toolkit {ckpt['kind']} --resume")
    stored = recipe_from_dict(ckpt["recipe"], source=str(resume))
    resolved = with_sets(replace(stored, **given) if given else stored, list(sets))
    return RunStart(resolved, Path(resume), ckpt)
