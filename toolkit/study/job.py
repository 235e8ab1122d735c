"""``toolkit study``: the empirical study of SimSiam (Chen & He 2021, Sec. 4) on the user's data.

Each variant of ``study.variants`` (see ``toolkit.study.variants``) is a full pretraining run in
``DIR/<variant>/``, made by ``toolkit.pretrain.pretrain``; with ``--seeds N`` (``study.seeds``) seeds
1..N-1 of it run in ``DIR/<variant>-seed<i>/`` (``train.seed`` + i) and the report gives mean +- 95%
CI per variant and a verdict only where the interval allows it (``toolkit.study.seeds``). The study is resumable: a variant
whose checkpoint reached its epochs is reused, a partial one resumed from its checkpoint, a
missing one started. A variant whose loss becomes non-finite (expected of some ablations) is
recorded as unstable in ``DIR/<variant>/study_run.json`` and the study goes on. After every
variant ``DIR/report.md``, ``DIR/study.json``, ``DIR/zstd.png`` and ``DIR/loss.png`` are
rewritten, so an interrupted study still leaves a report of what has finished.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.data.split_check import check_same_split
from toolkit.data.split_record import record_of
from toolkit.engine.checkpoint import Checkpoint
from toolkit.config import Recipe, replace
from toolkit.console import info, warn
from toolkit.errors import Interrupted, NonFiniteLoss, ToolkitError
from toolkit.engine.run_folder import RunFolder, read_metrics, recipe_text
from toolkit.io import write_text_atomic
from toolkit.study.findings import Finding, findings
from toolkit.study.outcome import VariantResult, judge_seeds
from toolkit.study.report import print_summary, write_outputs
from toolkit.study.variants import Variant, build_variant, check_names, recipe_differences, replaced_switches, same_run_key

RUN_FILE = RunFolder.STUDY_RUN  # per variant: status (finished | failed), error, wall seconds


@dataclass
class StudyResult:
    """A study's folder, every variant's result and the five findings."""

    out_dir: Path
    results: list[VariantResult]
    findings: list[Finding]


def run_study(recipe: Recipe, out_dir: Path) -> StudyResult:
    """Run (or continue) every variant of ``recipe.study.variants`` and write the report in ``out_dir``."""
    from toolkit.data.sources import load_splits

    if recipe.study.seeds < 1:
        raise ToolkitError(f"--seeds {recipe.study.seeds}: must be 1 or more")
    names = check_names(recipe.study.variants)
    train_images = len(load_splits(recipe.data).train)  # lists files only; batch sizes are capped to it
    variants = [build_variant(recipe, name, train_images) for name in names]
    notes = replaced_switches(recipe)
    for note in notes:
        warn(f"study: {note}")
    with RunFolder(out_dir).writing():
        return _run_variants(recipe, out_dir, names, variants, notes, train_images)


def _run_variants(recipe: Recipe, out_dir: Path, names: list[str], variants: list[Variant], notes: list[str],
                  train_images: int) -> StudyResult:
    write_text_atomic(out_dir / RunFolder.STUDY_RECIPE, recipe_text(recipe))
    info(f"study of {len(variants)} variants in {out_dir}: {', '.join(names)}")

    results = [_result(v, out_dir, "missing") for v in variants]
    first_of: dict[str, str] = {}
    for index, variant in enumerate(variants):
        key = json.dumps(same_run_key(variant.recipe), sort_keys=True)
        if key in first_of:  # e.g. batch_256 when the baseline already runs at batch 256
            results[index] = _result(variant, out_dir, "same_as", same_as=first_of[key])
            info(f"variant {variant.name}: the same run as {first_of[key]}, not run again")
            continue
        first_of[key] = variant.name
        info(f"variant {index + 1}/{len(variants)} {variant.name}: {variant.change}")
        results[index] = _run_variant(variant, out_dir)
        for seed in range(1, recipe.study.seeds):
            info(f"variant {variant.name}, seed {seed + 1}/{recipe.study.seeds} (train.seed {recipe.train.seed + seed})")
            results[index].seed_runs.append(_run_variant(_seeded(variant, recipe, seed), out_dir, f"{variant.name}-seed{seed}"))
        _finish(recipe, out_dir, results, notes, train_images, final=False)
    for result in results:  # a repeated run (batch_256 = baseline) reports the seeds of the run it repeats
        if result.same_as:
            source = next(r for r in results if r.name == result.same_as)
            result.seed_runs = [dataclasses.replace(s, name=result.name, paper=result.paper, same_as=result.same_as,
                                                    seed_runs=[]) for s in source.seed_runs]
    study_findings = _finish(recipe, out_dir, results, notes, train_images, final=True)
    return StudyResult(out_dir, results, study_findings)


def _finish(recipe: Recipe, out_dir: Path, results: list[VariantResult], notes: list[str],
            train_images: int, final: bool) -> list[Finding]:
    judge_seeds(results, recipe.train.collapse_fraction)
    study_findings = findings(results)
    write_outputs(out_dir, recipe, results, study_findings, notes, train_images)
    if final:
        print_summary(out_dir, results, study_findings)
    return study_findings


def _seeded(variant: Variant, recipe: Recipe, seed: int) -> Variant:
    """The variant with ``train.seed`` moved by ``seed`` (other initial weights and batches)."""
    return dataclasses.replace(variant, recipe=replace(variant.recipe, **{"train.seed": recipe.train.seed + seed}))


def _result(variant: Variant, out_dir: Path, status: str, folder: str | None = None, **extra: Any) -> VariantResult:
    return VariantResult(name=variant.name, change=variant.change, paper=variant.paper, note=variant.note,
                         run_dir=folder or variant.name, status=status, epochs=variant.recipe.train.epochs,
                         batch_size=variant.recipe.train.batch_size, proj_bn=variant.recipe.model.proj_bn, **extra)


def _run_variant(variant: Variant, out_dir: Path, folder: str | None = None) -> VariantResult:
    """Reuse, resume or start the run of ``variant`` in ``out_dir/<folder or name>``; a non-finite loss is a result."""
    from toolkit.pretrain import pretrain

    folder = folder or variant.name
    run_dir = out_dir / folder
    state = _read_run_file(run_dir)
    resume = None
    if RunFolder(run_dir).checkpoint.exists():
        resume = Checkpoint.load(run_dir)
        diffs = recipe_differences(resume.recipe_dict, variant.recipe)
        if diffs:
            raise ToolkitError(f"{run_dir} holds a run of another setting ({'; '.join(diffs[:3])}); "
                               "choose another --out, or delete that folder to rerun the variant")
        # Same settings, other files (data added or removed): its figures would be on another split.
        check_same_split(resume.split, record_of(variant.recipe.data), str(run_dir),
                         "choose another --out, or delete that folder to rerun the variant")
        if state.get("status") == "failed":
            info(f"variant {variant.name}: reusing its earlier run, which stopped on a non-finite loss "
                 f"(delete {run_dir} to try again)")
            return _result(variant, out_dir, folder=folder, status="failed", records=read_metrics(run_dir),
                           error=state.get("error"), wall_s=state.get("wall_s"))
        if resume.epoch >= variant.recipe.train.epochs:
            info(f"variant {variant.name}: finished run reused ({resume.epoch} epochs)")
            return _result(variant, out_dir, folder=folder, status="finished", records=read_metrics(run_dir),
                           wall_s=state.get("wall_s"))
    status, error = "finished", None
    tic = time.perf_counter()
    try:
        pretrain(variant.recipe, run_dir, resume=resume)
    except NonFiniteLoss as exc:  # bn_all or a high lr may diverge: that is an outcome, not a crash
        status, error = "failed", str(exc).split(";")[0]
        warn(f"variant {variant.name}: {error}; recorded as unstable, the study goes on")
    except Interrupted as exc:
        _write_run_file(run_dir, {**state, "wall_s": state.get("wall_s", 0.0) + time.perf_counter() - tic})
        stopped = Interrupted(f"study interrupted in variant {variant.name}, its checkpoint saved; rerun the same "
                              f"toolkit study command with --out {out_dir} to continue (finished variants are reused)")
        stopped.exit_code = exc.exit_code  # 130 for Ctrl-C, 143 for SIGTERM
        raise stopped from None
    wall = state.get("wall_s", 0.0) + time.perf_counter() - tic
    _write_run_file(run_dir, {"status": status, "error": error, "wall_s": round(wall, 1)})
    return _result(variant, out_dir, folder=folder, status=status, records=read_metrics(run_dir), error=error,
                   wall_s=round(wall, 1))


def _read_run_file(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def _write_run_file(run_dir: Path, state: dict[str, Any]) -> None:
    if run_dir.is_dir():
        write_text_atomic(run_dir / RUN_FILE, json.dumps(state, indent=1) + "\n")
