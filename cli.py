"""The ``toolkit`` command line: parse, load the recipe, call one library function. No logic here."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from toolkit.errors import ToolkitError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="SimSiam pretraining, metric fine-tuning, evaluation, export and similarity scoring.")

RecipeArg = Annotated[Optional[str], typer.Argument(help="Recipe TOML file or name in recipes/ (default: digits).")]
DataOpt = Annotated[Optional[str], typer.Option("--data", help="Image folder, train/+test/ folder, CSV manifest, or 'digits'.")]
EpochsOpt = Annotated[Optional[int], typer.Option("--epochs", help="Shortcut for --set train.epochs=N.")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", help="Run folder (default runs/<recipe>-<timestamp>).")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a recipe key: section.key=value (repeatable).")]


@app.callback()
def main() -> None:
    """SimSiam pretraining, metric fine-tuning, evaluation, export and similarity scoring."""


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn ``ToolkitError`` into one 'error:' line on stderr and its exit code, without a traceback."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ToolkitError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return run


def _launch_local_processes(nproc: int, argv: list[str]) -> None:
    """Re-run this command under torchrun with ``nproc`` local processes; exit with its status."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", __file__, *argv]
    raise typer.Exit(subprocess.call(cmd))


@app.command()
@user_errors
def pretrain(
    recipe: RecipeArg = None,
    data: DataOpt = None,
    epochs: EpochsOpt = None,
    out: OutOpt = None,
    device: DeviceOpt = None,
    set_: SetOpt = None,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue the run in this folder.")] = None,
    nproc: Annotated[int, typer.Option("--nproc", help="Local processes (DistributedDataParallel).")] = 1,
) -> None:
    """Pretrain an encoder with SimSiam (two views, predictor, stop-gradient)."""
    from toolkit import checkpoint
    from toolkit.config import load_recipe, recipe_from_dict, replace, with_sets
    from toolkit.pretrain import pretrain as run_pretrain
    from toolkit.run_files import default_run_dir

    shortcuts = {"train.epochs": epochs, "data.path": data, "train.device": device}
    if resume is not None:
        if recipe is not None:
            raise ToolkitError("--resume continues a run with its own recipe.toml; do not also give a RECIPE")
        ckpt = checkpoint.load(resume)
        if ckpt["kind"] != "pretrain":
            raise ToolkitError(f"--resume {resume}: this is a {ckpt['kind']} run; use toolkit {ckpt['kind']} --resume")
        base = recipe_from_dict(ckpt["recipe"], source=str(resume))
        resolved = replace(base, **{k: v for k, v in shortcuts.items() if v is not None})
        resolved = with_sets(resolved, set_ or [])
        run_dir = Path(resume)
    else:
        resolved = load_recipe(recipe, shortcuts, set_ or [])
        run_dir = out or default_run_dir(resolved.name)
        ckpt = None
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        argv = ["pretrain", *([recipe] if recipe else []), "--out", str(run_dir)]
        for flag, value in (("--data", data), ("--epochs", epochs), ("--device", device), ("--resume", resume)):
            if value is not None:
                argv += [flag, str(value)]
        for item in set_ or []:
            argv += ["--set", item]
        if resume is not None:
            argv.remove("--out"), argv.remove(str(run_dir))
        _launch_local_processes(nproc, argv)
    run_pretrain(resolved, run_dir, resume=ckpt)


# --- finetune / evaluate (issue 5) ---


# --- export / embed / score (issue 3) ---


# --- study (issue 4) ---


if __name__ == "__main__":
    app()
