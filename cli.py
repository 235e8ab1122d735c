"""The ``toolkit`` command line: parse, load the recipe, call one library function. No logic here."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from scoring import commands as scoring_commands
from scoring.commands import ThreadsOpt
from toolkit.errors import ToolkitError

if TYPE_CHECKING:
    from toolkit.engine.run_start import RunStart

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="SimSiam pretraining, metric fine-tuning, evaluation, export and similarity scoring.")

RecipeArg = Annotated[Optional[str], typer.Argument(help="Recipe TOML file or name in recipes/ (default: digits).")]
DataOpt = Annotated[Optional[str], typer.Option("--data", help="Image folder, train/+test/ folder, CSV manifest, or 'digits'.")]
EpochsOpt = Annotated[Optional[int], typer.Option("--epochs", help="Shortcut for --set train.epochs=N.")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", help="Run folder (default runs/<recipe>-<timestamp>).")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a recipe key: section.key=value (repeatable).")]
ResumeOpt = Annotated[Optional[Path], typer.Option("--resume", help="Continue the run in this folder (or its checkpoint.pt).")]
NprocOpt = Annotated[int, typer.Option("--nproc", help="Local processes (DistributedDataParallel).")]


@app.callback()
def main() -> None:
    """SimSiam pretraining, metric fine-tuning, evaluation, export and similarity scoring."""
    from toolkit.console import route_warnings

    route_warnings()  # library warnings become one "warning:" line each


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn ``ToolkitError`` into one 'error:' line on stderr and its exit code, without a traceback."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except ToolkitError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:  # a second Ctrl-C, or one outside a training loop
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None

    return run


@app.command()
@user_errors
def pretrain(
    recipe: RecipeArg = None,
    data: DataOpt = None,
    epochs: EpochsOpt = None,
    out: OutOpt = None,
    device: DeviceOpt = None,
    set_: SetOpt = None,
    resume: ResumeOpt = None,
    nproc: NprocOpt = 1,
) -> None:
    """Pretrain an encoder with SimSiam (two views, predictor, stop-gradient)."""
    from toolkit.pretrain import pretrain as run_pretrain

    shortcuts = {"train.epochs": epochs, "data.path": data, "train.device": device}
    start = _start_training("pretrain", recipe, shortcuts, set_, out, resume, nproc)
    run_pretrain(start.recipe, start.run_dir, resume=start.resume)


def _start_training(kind: str, recipe: str | None, shortcuts: dict[str, Any], set_: list[str] | None, out: Path | None,
                    resume: Path | None, nproc: int, run_name: str = "{name}") -> RunStart:
    """``--nproc`` checked, the run folder resolved (``start_run``), then N > 1 processes launched under torchrun."""
    from toolkit.engine.distributed import check_nproc, launch_local_processes
    from toolkit.engine.run_start import start_run

    check_nproc(nproc)
    start = start_run(kind, recipe, shortcuts, set_ or [], out, resume, run_name=run_name)
    launch_local_processes(nproc, __file__, start.run_dir, resuming=resume is not None)
    return start


# --- finetune / evaluate (issue 5) ---


@app.command()
@user_errors
def finetune(
    recipe: RecipeArg = None,
    loss: Annotated[Optional[str], typer.Option("--loss", help="contrastive, triplet, proto or normsoftmax (shortcut for --set finetune.loss=...).")] = None,
    init: Annotated[Optional[str], typer.Option("--init", help="Pretrain checkpoint or run folder to start from; 'none' = random "
                                                "weights (default: the newest pretrain run under runs/).")] = None,
    data: DataOpt = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Shortcut for --set finetune.epochs=N.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Run folder (default runs/<recipe>-finetune-<loss>-<timestamp>).")] = None,
    device: DeviceOpt = None,
    set_: SetOpt = None,
    resume: ResumeOpt = None,
    nproc: NprocOpt = 1,
    refit: Annotated[Optional[bool], typer.Option("--refit/--no-refit", help="Choose the epoch count on validation (run "
                                                  "<out>/selection), then train again on train + validation (finetune.refit).")] = None,
    aux: Annotated[Optional[str], typer.Option("--aux", help="Auxiliary loss during fine-tuning: none or simsiam "
                                               "(finetune.aux; Gidaris et al. 2019).")] = None,
    aux_weight: Annotated[Optional[float], typer.Option("--aux-weight", help="Weight of the auxiliary loss (finetune.aux_weight).")] = None,
    features: Annotated[Optional[str], typer.Option("--features", help="What the model embeds: embedding (the head) or backbone "
                                                    "(penultimate features; finetune.features).")] = None,
    allow_seen_pretraining: Annotated[bool, typer.Option(
        "--allow-seen-pretraining", help="Start from an init whose train or validation split holds test images of "
        "this split (refused otherwise); the checkpoint and eval.json record it.")] = False,
) -> None:
    """Fine-tune the twin encoder with a contrastive, triplet, prototypical or normalised-softmax loss on labelled images."""
    from toolkit.finetune import finetune as run_finetune

    shortcuts = {"finetune.loss": loss, "finetune.init": init, "finetune.epochs": epochs, "data.path": data,
                 "train.device": device, "finetune.refit": refit, "finetune.aux": aux, "finetune.aux_weight": aux_weight,
                 "finetune.features": features}
    start = _start_training("finetune", recipe, shortcuts, set_, out, resume, nproc, run_name="{name}-finetune-{loss}")
    run_finetune(start.recipe, start.run_dir, resume=start.resume, allow_seen_pretraining=allow_seen_pretraining)


@app.command()
@user_errors
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="A pretrain or finetune checkpoint.pt, or its run folder.")],
    data: Annotated[Optional[str], typer.Option("--data", help="Evaluate on this data instead of the checkpoint's own "
                                                "(replaces data.path; other data settings come from its recipe).")] = None,
    way: Annotated[int, typer.Option("--way", help="Classes per episode (N).")] = 5,
    shot: Annotated[int, typer.Option("--shot", help="Support images per class (K).")] = 1,
    query: Annotated[int, typer.Option("--query", help="Query images per class.")] = 15,
    episodes: Annotated[int, typer.Option("--episodes", help="Episodes (the mean and its 95% CI are reported).")] = 600,
    within_group: Annotated[bool, typer.Option("--within-group", help="Also report episodes whose classes share one group "
                                               "(first folder of the class, or a CSV 'group' column), as in Lake et al.")] = False,
    support_tta: Annotated[Optional[int], typer.Option("--support-tta", help="Episodes: each support image stands for the mean "
                                                       "of itself and N augmented views (finetune.augment); 0 = off; default: "
                                                       "the recipe's finetune.support_tta.")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of episodes, pairs and t-SNE.")] = 0,
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder for eval.json and the figures (default: the checkpoint's).")] = None,
    far: Annotated[float, typer.Option("--far", help="Target false-accept rate of the calibrated pair threshold (TAR@FAR).")] = 0.001,
    device: DeviceOpt = None,
    set_: SetOpt = None,
) -> None:
    """Few-shot episodes, imbalanced classification and pair verification; writes eval.json."""
    from toolkit.evaluate.job import EpisodeSpec
    from toolkit.evaluate.job import evaluate as run_evaluate
    from toolkit.out_paths import removed_if_failed

    with removed_if_failed(out):  # a failed evaluation leaves no empty --out folder
        run_evaluate(checkpoint, data=data, spec=EpisodeSpec(way, shot, query, episodes, within_group, support_tta), out=out,
                     sets=set_ or [], device=device, seed=seed, far=far)


# --- export (issue 3) ---

@app.command()
@user_errors
def export(
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint .pt or run folder (pretrain or finetune).")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default: <run folder>/export).")] = None,
    trt: Annotated[bool, typer.Option("--trt", help="Also build encoder.engine with TensorRT (needs CUDA).")] = False,
    fp16: Annotated[bool, typer.Option("--fp16", help="TensorRT engine in mixed fp16 (with --trt).")] = False,
    opset: Annotated[int, typer.Option("--opset", help="ONNX opset (18 up to the installed exporter's newest).")] = 20,
    max_batch: Annotated[int, typer.Option("--max-batch", help="Largest batch of the TensorRT profile.")] = 256,
    int8: Annotated[bool, typer.Option("--int8", help="Also write encoder.int8.onnx (static QDQ; needs --calib-data).")] = False,
    calib_data: Annotated[Optional[Path], typer.Option("--calib-data", help="Images to calibrate int8 on (folder, CSV, list).")] = None,
    data: Annotated[Optional[Path], typer.Option("--data", help="Real images for the parity check (folder, CSV, list).")] = None,
    threads: ThreadsOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an encoder.onnx in --out exported from another checkpoint.")] = False,
    int8_min_cosine: Annotated[float, typer.Option("--int8-min-cosine", help="Reject int8 below this min cosine to fp32 "
                                                   "on held-out images.")] = 0.999,
    int8_accept: Annotated[bool, typer.Option("--int8-accept", help="Keep an int8 model that fails the gate.")] = False,
    triton: Annotated[Optional[Path], typer.Option("--triton", help="Also write a Triton Inference Server model repository here.")] = None,
    triton_name: Annotated[str, typer.Option("--triton-name", help="The model's name in the Triton repository.")] = "encoder",
    allow_test_thresholds: Annotated[bool, typer.Option("--allow-test-thresholds", help="Write thresholds calibrated on "
                                                        "the test split (no validation split) into the model.")] = False,
) -> None:
    """Export the encoder to ONNX (validated, parity-checked), optionally int8, TensorRT and a Triton repository."""
    from exporters.export import export_checkpoint
    from exporters.export_options import ExportOptions

    export_checkpoint(checkpoint, out, ExportOptions(trt=trt, fp16=fp16, opset=opset, max_batch=max_batch, int8=int8,
                      calib_data=calib_data, data=data, threads=threads, force=force,
                      int8_min_cosine=int8_min_cosine, int8_accept=int8_accept, triton=triton, triton_name=triton_name,
                      allow_test_thresholds=allow_test_thresholds))


# --- embed / score / index (issues 3, 12): scoring's commands, declared in scoring/commands.py ---
app.command()(user_errors(scoring_commands.embed))
app.command()(user_errors(scoring_commands.score))
index_app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                        help="A faiss index over a sharded embedding store, for galleries of millions.")
app.add_typer(index_app, name="index")
index_app.command("build")(user_errors(scoring_commands.index_build))
index_app.command("add")(user_errors(scoring_commands.index_add))
index_app.command("info")(user_errors(scoring_commands.index_info))


# --- study (issue 4) ---
@app.command()
@user_errors
def study(
    recipe: RecipeArg = None,
    data: DataOpt = None,
    epochs: EpochsOpt = None,
    out: Annotated[Optional[Path], typer.Option(
        "--out", help="Study folder (default runs/study-<recipe>-<timestamp>); give an existing one to continue it.")] = None,
    only: Annotated[Optional[str], typer.Option(
        "--only", help="Comma-separated variants: baseline, no_stop_gradient, no_predictor, fixed_predictor, "
                       "asymmetric, batch_<n>, bn_none, bn_hidden, bn_default, bn_all (default: study.variants).")] = None,
    set_: SetOpt = None,
    device: DeviceOpt = None,
    seeds: Annotated[Optional[int], typer.Option("--seeds", help="Runs per variant with different seeds: mean +- 95% "
                                                 "CI, verdicts only where the interval allows (default 1).")] = None,
) -> None:
    """Reproduce the SimSiam paper's ablations (Sec. 4) on a recipe: one pretraining run per variant, then report.md."""
    from toolkit.engine.run_start import start_run
    from toolkit.study.job import run_study

    shortcuts = {"train.epochs": epochs, "data.path": data, "train.device": device, "study.variants": only,
                 "study.seeds": seeds}
    start = start_run("study", recipe, shortcuts, set_ or [], out, None, run_name="study-{name}")
    run_study(start.recipe, start.run_dir)



def run() -> None:
    """The console entry point: the app, then a quiet exit if Ctrl-C comes while the interpreter shuts down."""
    from toolkit.engine.interrupt import quiet_interrupt_at_exit

    try:
        app()
    finally:
        quiet_interrupt_at_exit()


if __name__ == "__main__":
    run()
