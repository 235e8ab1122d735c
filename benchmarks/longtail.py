"""Long-tail benchmark: the class-balanced pipeline against a supervised baseline given the same CPU time.

For each split seed, through the CLI exactly as shipped:
  1. ``toolkit pretrain PRETRAIN_RECIPE`` (SimSiam on the long-tailed training images, labels unused)
  2. ``toolkit finetune FINETUNE_RECIPE --init <1>`` (class-balanced sampler; ``--refit`` if asked)
  3. ``toolkit evaluate <2>``: balanced accuracy of kNN, class-balanced kNN and prototypes on the
     balanced test split, and the rule ``evaluate`` chose on the validation split.
Then the supervised baseline (``benchmarks/supervised.py``: the same backbone + a linear classifier,
cross-entropy, class-balanced sampler, the fine-tuning augmentation) trained on the same labelled
images (training + validation splits: the pipeline refits on both or chooses on validation) for the
CPU seconds that stages 1 and 2 used (user + system time of the CLI processes and their workers).

Every setting of the recipes is chosen on the validation split (``--seeds`` are split seeds: each seed
draws its own test, validation and long tail). Prints JSON; ``--out`` also writes it.

    python benchmarks/longtail.py --data digits --pretrain digits --finetune digits --imbalance 100 \
        --seeds 0,1,2 --work /tmp/longtail-digits --out benchmarks/results/longtail_digits.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

RULES = ("knn", "knn_balanced", "prototype")


def children_cpu_seconds() -> float:
    """User + system CPU seconds of every finished child process (and its workers) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_cli(args: list[str], log: Path) -> float:
    """Run ``toolkit ARGS``; returns its CPU seconds. Its output goes to ``log``; a failure stops the benchmark."""
    toolkit = Path(sys.executable).parent / "toolkit"
    before = children_cpu_seconds()
    with log.open("a") as handle:
        handle.write(f"$ toolkit {' '.join(args)}\n")
        handle.flush()
        done = subprocess.run([str(toolkit), *args], stdout=handle, stderr=subprocess.STDOUT, env=os.environ)
    if done.returncode != 0:
        raise SystemExit(f"error: toolkit {' '.join(args)} failed (exit {done.returncode}); see {log}")
    return children_cpu_seconds() - before


def pipeline(args: argparse.Namespace, seed: int, work: Path) -> dict[str, Any]:
    """Stages 1-3 for one split seed; run folders under ``work`` are reused when their eval.json exists,
    and a finished pretraining run alone (its CPU seconds recorded) when only fine-tuning is to be run again."""
    common = ["--data", args.data, "--set", f"data.imbalance_ratio={args.imbalance}",
              "--set", f"data.split_seed={seed}", "--set", "train.workers=0"]
    pre, fine, log = work / f"seed{seed}" / "pretrain", work / f"seed{seed}" / "finetune", work / f"seed{seed}" / "log.txt"
    times_file = work / f"seed{seed}" / "cpu_seconds.json"
    if (fine / "eval.json").exists() and times_file.exists():
        print(f"[seed {seed}] reusing {fine}", file=sys.stderr)
        cpu = json.loads(times_file.read_text())
    else:
        log.parent.mkdir(parents=True, exist_ok=True)
        recorded = json.loads(times_file.read_text()) if times_file.exists() else {}
        cpu = {"pretrain": 0.0}
        from toolkit.engine.run_folder import RunFolder

        if args.pretrain_epochs != 0 and "pretrain" in recorded and (pre / RunFolder.CHECKPOINT).exists():
            print(f"[seed {seed}] reusing {pre} ({recorded['pretrain']:.0f} CPU s recorded)", file=sys.stderr)
            cpu["pretrain"] = recorded["pretrain"]
        elif args.pretrain_epochs != 0:
            cpu["pretrain"] = run_cli(["pretrain", args.pretrain, *common, "--out", str(pre),
                                       *(["--epochs", str(args.pretrain_epochs)] if args.pretrain_epochs else []),
                                       *sum((["--set", s] for s in args.pretrain_set), [])], log)
            times_file.write_text(json.dumps(cpu))
        init = ["--init", str(pre)] if args.pretrain_epochs != 0 else ["--set", "finetune.init=none"]
        cpu["finetune"] = run_cli(["finetune", args.finetune, *init, *common, "--out", str(fine),
                                   *(["--refit"] if args.refit else []),
                                   *sum((["--set", s] for s in args.finetune_set), [])], log)
        cpu["evaluate"] = run_cli(["evaluate", str(fine), "--far", "0.01"], log)
        times_file.write_text(json.dumps(cpu))
    from toolkit.evaluate.report import EvalReport

    c = EvalReport.read(fine / "eval.json").classification
    return {"chosen_rule": c["rule"], "balanced_accuracy": c["balanced_accuracy"],
            **{rule: c[rule]["balanced_accuracy"] for rule in RULES}, "cpu_seconds": cpu}


def supervised(args: argparse.Namespace, seed: int, seconds: float) -> dict[str, Any]:
    """The baseline on the pipeline's labelled images (train + validation), for ``seconds`` of CPU time."""
    import torch

    from benchmarks.supervised import SupervisedSettings, predict, train_supervised
    from toolkit.config import load_recipe, with_sets
    from toolkit.data.merge import with_validation_in_train
    from toolkit.data.preprocess import Normalizer
    from toolkit.data.store import default_normalization, load_data
    from toolkit.metrics.classification import classification_metrics

    data = {"data.path": args.data, "data.imbalance_ratio": args.imbalance, "data.split_seed": seed}
    recipe = with_sets(load_recipe(args.finetune, data), args.finetune_set)
    # The pipeline's backbone is the pretraining run's (``finetune --init`` keeps it): the baseline's too.
    recipe = dataclasses.replace(recipe, model=with_sets(load_recipe(args.pretrain), args.pretrain_set).model)
    loaded = with_validation_in_train(load_data(recipe.data))
    assert loaded.test is not None and loaded.test.labels is not None
    mean, std = default_normalization(recipe.data.channels, recipe.data.mean, recipe.data.std)
    normalizer = Normalizer(mean, std, torch.device("cpu"))
    settings = SupervisedSettings(seconds=seconds, batch_size=recipe.finetune.batch_size,
                                  m_per_class=recipe.finetune.m_per_class, seed=seed)
    net, stats = train_supervised(recipe, loaded.train, normalizer, settings)
    metrics = classification_metrics(loaded.test.labels, predict(net, loaded.test, normalizer, recipe.data.image_size),
                                     loaded.train.class_names)
    return {"balanced_accuracy": metrics["balanced_accuracy"], "training": stats,
            "images": len(loaded.train), "test_images": len(loaded.test)}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over seeds of each figure and of the paired difference pipeline - supervised, with its standard error."""
    import numpy as np

    def mean_se(values: list[float]) -> dict[str, float]:
        v = np.asarray(values, dtype=float)
        se = float(v.std(ddof=1) / np.sqrt(len(v))) if len(v) > 1 else float("nan")
        return {"mean": float(v.mean()), "standard_error": se}

    out = {key: mean_se([r["pipeline"][key] for r in rows]) for key in ("balanced_accuracy", *RULES)}
    out["supervised"] = mean_se([r["supervised"]["balanced_accuracy"] for r in rows])
    out["pipeline_minus_supervised"] = mean_se([r["pipeline"]["balanced_accuracy"] - r["supervised"]["balanced_accuracy"]
                                                for r in rows])
    out["target_met"] = bool(out["pipeline_minus_supervised"]["mean"] >= 0.01)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="'digits' or a folder with train/<class>/ and test/<class>/")
    parser.add_argument("--pretrain", default="digits", help="pretraining recipe")
    parser.add_argument("--finetune", default="digits", help="fine-tuning recipe")
    parser.add_argument("--pretrain-epochs", type=int, default=None, help="0: no pretraining (random init)")
    parser.add_argument("--pretrain-set", action="append", default=[], help="--set for pretrain")
    parser.add_argument("--finetune-set", action="append", default=[], help="--set for finetune")
    parser.add_argument("--refit", action="store_true", help="finetune --refit")
    parser.add_argument("--imbalance", type=float, default=100.0)
    parser.add_argument("--seeds", default="0", help="comma-separated split seeds")
    parser.add_argument("--work", type=Path, required=True, help="run folders (reused when complete)")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args()
    rows = []
    for seed in (int(s) for s in args.seeds.split(",")):
        result = pipeline(args, seed, args.work)
        budget = result["cpu_seconds"]["pretrain"] + result["cpu_seconds"]["finetune"]
        tic = time.perf_counter()
        base = supervised(args, seed, budget)
        base["wall_seconds"] = time.perf_counter() - tic
        rows.append({"seed": seed, "pipeline": result, "supervised": base})
        print(f"[seed {seed}] pipeline {100 * result['balanced_accuracy']:.2f} ({result['chosen_rule']}; "
              + ", ".join(f"{r} {100 * result[r]:.2f}" for r in RULES)
              + f") vs supervised {100 * base['balanced_accuracy']:.2f} in {budget:.0f} CPU s", file=sys.stderr)
    report = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "measure": "balanced accuracy on the balanced test split; budget = CPU seconds (user+system) of "
                         "pretrain + finetune, given to the baseline as process CPU time",
              "seeds": rows, "summary": summarise(rows)}
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
