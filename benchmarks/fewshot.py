"""Few-shot and long-tail benchmark: what each stage of the pipeline buys, on held-out classes.

Omniglot (the two "background small" folders, Greek and Latin merged): train on the characters
of five alphabets, evaluate on three held-out alphabets (Korean, Sanskrit, Tagalog), rotations by
90/180/270 degrees as extra classes. Pipelines, all with the same Conv-4 at 28x28:
  1. random init        the untrained network's l2-normalised feature
  2. SimSiam            ``toolkit pretrain omniglot``
  3. SimSiam + contrastive   ``toolkit finetune omniglot_contrastive --init <2>``
  4. SimSiam + triplet       ``toolkit finetune omniglot_triplet --init <2>``
  5. SimSiam + proto         ``toolkit finetune omniglot_proto --init <2>`` (prototypical episodes)
  6. Prototypical Network    trained from scratch episodically (Snell et al. 2017), its own rule
Each is scored on the same 600 seeded episodes per setting (5-way 1-shot, 5-way 5-shot,
20-way 1-shot, 15 queries per class), mean accuracy and 95% CI, in two kinds: episodes mixing
alphabets, and within-alphabet episodes (every episode's classes from one alphabet, Lake et al.
2015; ``toolkit evaluate --within-group``).

The long-tail comparison (CIFAR-10-LT, digits) is ``benchmarks/longtail.py``.

Runs the library the CLI runs (same recipes, same code); each stage's run folder is kept under
``--work`` and reused when complete, so an interrupted benchmark continues where it stopped.
Prints JSON (stdout) and a Markdown table (stderr, and README-ready in ``--work``/results.md).

    python benchmarks/fewshot.py --omniglot ~/.cache/toolkit-data/omniglot --losses proto,triplet --scratch --label-fraction 0.25
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.omniglot_data import TEST_ALPHABETS, labelled_subset, omniglot_manifest  # noqa: E402

SETTINGS = ((5, 1), (5, 5), (20, 1))  # (way, shot)
QUERY, EPISODES = 15, 600


def complete(run_dir: Path, epochs: int) -> bool:
    """True when ``run_dir`` holds a finished run of ``epochs`` epochs (reused instead of retrained)."""
    from toolkit.engine.checkpoint import Checkpoint
    from toolkit.errors import ToolkitError

    try:
        ckpt = Checkpoint.load(run_dir)
    except ToolkitError:
        return False
    return ckpt.epoch == epochs and not ckpt.training.mid_epoch


def timed_stage(name: str, run_dir: Path, epochs: int, train: Any, timings: dict[str, float]) -> None:
    """Run ``train()`` unless ``run_dir`` is already complete; record its wall time."""
    import shutil

    if complete(run_dir, epochs):
        print(f"[{name}] reusing {run_dir}", file=sys.stderr)
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    tic = time.perf_counter()
    train()
    timings[name] = time.perf_counter() - tic


def fewshot_numbers(ckpt_path: Path, data_path: str, support_tta: int | None = None) -> dict[str, Any]:
    """Embed the held-out test split once with ``toolkit evaluate``'s code; score every setting.

    Supports stand for the mean of themselves and ``support_tta`` augmented views (default: the
    checkpoint's ``finetune.support_tta``, as ``toolkit evaluate``), recorded in each setting."""
    from toolkit.engine.checkpoint import Checkpoint
    from toolkit.data.groups import class_groups
    from toolkit.evaluate.episodes import run_episodes
    from toolkit.evaluate.job import embed, evaluation_recipe, support_embeddings
    from toolkit.evaluate.within_group import run_within_group_episodes
    from toolkit.data.store import load_data

    ckpt = Checkpoint.load(ckpt_path)
    recipe = evaluation_recipe(ckpt, data=data_path)
    test = load_data(recipe.data).test
    assert test is not None and test.labels is not None
    (emb,) = embed(ckpt, recipe, test)
    views = recipe.finetune.support_tta if support_tta is None else support_tta
    support = support_embeddings(ckpt, recipe, test, emb, views, seed=0)
    groups, names = class_groups(test.class_names, data_path)
    out = {}
    for w, s in SETTINGS:
        out[f"{w}-way {s}-shot"] = run_episodes(emb, test.labels, w, s, QUERY, EPISODES, seed=0, support_embeddings=support)
        out[f"{w}-way {s}-shot"]["within_group"] = run_within_group_episodes(emb, test.labels, groups, names, w, s,
                                                                              QUERY, EPISODES, seed=0,
                                                                              support_embeddings=support)
        out[f"{w}-way {s}-shot"]["support_tta"] = views
    return out


def stage_times(work: Path) -> dict[str, float]:
    """Wall seconds of every stage trained so far under ``work`` (kept across reuses)."""
    path = work / "timings.json"
    return json.loads(path.read_text()) if path.exists() else {}


def save_stage_times(work: Path, timings: dict[str, float]) -> None:
    (work / "timings.json").write_text(json.dumps(stage_times(work) | timings, indent=2) + "\n")


def omniglot(args: argparse.Namespace, work: Path, timings: dict[str, float]) -> dict[str, Any]:
    from toolkit.config import load_recipe
    from toolkit.finetune import finetune
    from toolkit.pretrain import pretrain

    manifest, images, characters = omniglot_manifest(Path(args.omniglot).expanduser(), work / "omniglot.csv")
    print(f"omniglot: {images} images of {characters} characters -> {manifest}", file=sys.stderr)
    data = {"data.path": str(manifest)}
    losses = [loss for loss in args.losses.split(",") if loss]
    runs = {"random_init": work / "random_init", "simsiam": work / "simsiam"}
    # The kNN monitor only reports (it changes no weight and draws no random number).
    simsiam = load_recipe("omniglot", {**data, "train.knn_every": 5,
                                       **({"train.epochs": args.pretrain_epochs} if args.pretrain_epochs else {})})
    # 0 epochs is no valid recipe value (a user's --epochs 0 is refused): set it past the check.
    untrained = dataclasses.replace(simsiam, train=dataclasses.replace(simsiam.train, epochs=0))
    timed_stage("random_init", runs["random_init"], 0, lambda: pretrain(untrained, runs["random_init"]), timings)
    timed_stage("simsiam", runs["simsiam"], simsiam.train.epochs, lambda: pretrain(simsiam, runs["simsiam"]), timings)
    save_stage_times(work, timings)

    def fine_tune(name: str, loss: str, init: str, extra: dict[str, Any]) -> None:
        runs[name] = work / name
        recipe = load_recipe(f"omniglot_{loss}", {**data, "finetune.init": init, **extra,
                                                  **({"finetune.epochs": args.finetune_epochs} if args.finetune_epochs else {})})
        timed_stage(name, runs[name], recipe.finetune.epochs, lambda r=recipe: finetune(r, runs[name]), timings)
        save_stage_times(work, timings)

    for loss in losses:
        fine_tune(f"simsiam_{loss}", loss, str(runs["simsiam"]), {})
        if args.scratch:
            fine_tune(f"scratch_{loss}", loss, "none", {})
    scarce = f"simsiam_{losses[0]}_labelled_{args.label_fraction:g}" if args.label_fraction else None
    if scarce:
        fine_tune(scarce, losses[0], str(runs["simsiam"]), {"data.classes": labelled_subset(manifest, args.label_fraction)})

    times = stage_times(work)
    results: dict[str, Any] = {"data": {"images": images, "characters": characters,
                                        "held_out": ", ".join(TEST_ALPHABETS) + " (+ rotations)"},
                               "stage_seconds": times}
    for name, run_dir in runs.items():
        results[name] = fewshot_numbers(run_dir, str(manifest))
        print(f"[{name}] {summary_line(results[name])}", file=sys.stderr)
    pipeline = f"simsiam_{losses[0]}"
    budget = args.protonet_seconds or times.get("simsiam", 0.0) + times.get(pipeline, 0.0)
    results["protonet"] = protonet(args, str(manifest), timings, budget, {})
    results["protonet"]["budget"] = {"seconds": budget, "same_as": f"simsiam + {pipeline}"}
    print(f"[protonet] {summary_line(results['protonet'])}", file=sys.stderr)
    if scarce:
        budget = times.get("simsiam", 0.0) + times.get(scarce, 0.0)
        name = f"protonet_labelled_{args.label_fraction:g}"
        results[name] = protonet(args, str(manifest), timings, budget,
                                 {"data.classes": labelled_subset(manifest, args.label_fraction)}, name=name)
        results[name]["budget"] = {"seconds": budget, "same_as": f"simsiam + {scarce}"}
        print(f"[{name}] {summary_line(results[name])}", file=sys.stderr)
    save_stage_times(work, timings)
    return results


def protonet(args: argparse.Namespace, manifest: str, timings: dict[str, float], seconds: float,
             overrides: dict[str, Any], name: str = "protonet") -> dict[str, Any]:
    """The baseline on the same decoded images (training and validation splits: the pipelines refit on
    both), test split and episodes as the pipelines, trained for ``seconds`` of wall time."""
    import torch

    from toolkit.config import load_recipe
    from toolkit.data.groups import class_groups
    from toolkit.data.merge import with_validation_in_train
    from toolkit.data.store import default_normalization, load_data
    from toolkit.data.preprocess import Normalizer
    from benchmarks.protonet import ProtoNetSettings, euclidean_episodes, train_protonet
    from toolkit.engine.embed import embed_store

    recipe = load_recipe("omniglot", {"data.path": manifest, **overrides})
    loaded = with_validation_in_train(load_data(recipe.data))
    assert loaded.test is not None and loaded.test.labels is not None
    mean, std = default_normalization(recipe.data.channels, recipe.data.mean, recipe.data.std)
    normalizer = Normalizer(mean, std, torch.device("cpu"), channels_last=True)
    settings = ProtoNetSettings(episodes=args.protonet_episodes if not seconds else 10**9, seconds=seconds)
    net, trained_seconds = train_protonet(loaded.train, normalizer, settings)
    timings[name] = trained_seconds
    emb = embed_store(net, loaded.test, normalizer, loaded.test.images.shape[-1], batch_size=512, l2_normalise=False)
    groups, _ = class_groups(loaded.test.class_names, manifest)
    out: dict[str, Any] = {}
    for w, s in SETTINGS:
        out[f"{w}-way {s}-shot"] = euclidean_episodes(emb, loaded.test.labels, w, s, QUERY, EPISODES, seed=0)
        within = euclidean_episodes(emb, loaded.test.labels, w, s, QUERY, EPISODES, seed=0, groups_of_class=groups)
        out[f"{w}-way {s}-shot"]["within_group"] = {k: within[k] for k in ("prototype", "nearest")}
    return out | {"training": {"way": settings.way, "shot": settings.shot, "query": settings.query,
                               "episodes": int(getattr(net, "trained_episodes", settings.episodes)),
                               "seconds": trained_seconds, "images": len(loaded.train)}}


def summary_line(numbers: dict[str, Any]) -> str:
    return ", ".join(f"{key} {100 * numbers[key]['prototype']['mean']:.2f}%" for key in
                     (f"{w}-way {s}-shot" for w, s in SETTINGS))


NAMES = {"random_init": "random init", "simsiam": "SimSiam only",
         "simsiam_proto": "SimSiam + proto", "scratch_proto": "proto from random init (same recipe)",
         "simsiam_triplet": "SimSiam + triplet", "scratch_triplet": "triplet from random init (same recipe)",
         "simsiam_contrastive": "SimSiam + contrastive",
         "protonet": "Prototypical Network (from scratch, same time as SimSiam + proto)",
         "simsiam_proto_labelled_0.25": "label-scarce: SimSiam (all images) + proto on 1/4 of the characters",
         "scratch_proto_labelled_0.25": "label-scarce: proto on the same 1/4 from random init (same recipe)",
         "protonet_labelled_0.25": "label-scarce: Prototypical Network on the same 1/4, same time"}


def stage_minutes(omniglot: dict[str, Any], name: str) -> str:
    """Wall minutes of a model's stages: SimSiam + fine-tuning for a pipeline, training for a baseline."""
    times = omniglot.get("stage_seconds", {})
    if name.startswith("protonet"):
        return f"{omniglot[name]['training']['seconds'] / 60:.1f}"
    if name.startswith("simsiam_"):
        return f"{times.get('simsiam', 0) / 60:.1f} + {times.get(name, 0) / 60:.1f}"
    if name in times:
        return f"{times[name] / 60:.1f}"
    return ""


def summary_table(omniglot: dict[str, Any]) -> list[str]:
    """The issue's headline: 20-way 1-shot within one alphabet and mixed, with the minutes behind each model."""
    lines = ["| Omniglot test alphabets, 20-way 1-shot, prototype rule | within one alphabet | mixed alphabets | "
             "wall minutes (SimSiam + fine-tuning) |", "|---|---:|---:|---:|"]
    for name, label in NAMES.items():
        if name not in omniglot:
            continue
        cell = omniglot[name]["20-way 1-shot"]
        within, mixed = cell["within_group"]["prototype"], cell["prototype"]
        lines.append(f"| {label} | {100 * within['mean']:.2f} ± {100 * within['ci95']:.2f} | "
                     f"{100 * mixed['mean']:.2f} ± {100 * mixed['ci95']:.2f} | {stage_minutes(omniglot, name)} |")
    return lines + [""]


def markdown(results: dict[str, Any], timings: dict[str, float]) -> str:
    """The README table: mean +- 95% CI of the prototype rule per pipeline and setting."""
    lines = []
    if "omniglot" in results:
        keys = [f"{w}-way {s}-shot" for w, s in SETTINGS]
        for kind, pick in (("mixed alphabets", lambda cell: cell), ("within one alphabet", lambda cell: cell["within_group"])):
            lines += [f"| Omniglot, held-out alphabets, {kind} | " + " | ".join(keys) + " |",
                      "|---|" + "---:|" * len(keys)]
            for name, label in NAMES.items():
                if name not in results["omniglot"]:
                    continue
                row = {k: pick(results["omniglot"][name][k]) for k in keys}
                cells = [f"{100 * row[k]['prototype']['mean']:.2f} ± {100 * row[k]['prototype']['ci95']:.2f}" for k in keys]
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
            lines.append("")
    if "omniglot" in results:
        lines += summary_table(results["omniglot"])
    if timings:
        lines += ["", "Stage wall times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items())]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--omniglot", help="folder holding the extracted Omniglot background folders")
    parser.add_argument("--work", default="runs/fewshot-benchmark", help="run folders and results (reused when complete)")
    parser.add_argument("--pretrain-epochs", type=int, default=0, help="SimSiam epochs (0 = the recipe's, 30)")
    parser.add_argument("--finetune-epochs", type=int, default=0, help="fine-tuning epochs (0 = the recipes', 30)")
    parser.add_argument("--protonet-episodes", type=int, default=4000,
                        help="ProtoNet training episodes (4000: about the time of SimSiam + triplet)")
    parser.add_argument("--losses", default="proto,triplet",
                        help="fine-tuning recipes omniglot_<loss>, comma-separated; the first is the pipeline the baselines match")
    parser.add_argument("--scratch", action="store_true",
                        help="also run every fine-tuning from random weights, same budget (what SimSiam buys)")
    parser.add_argument("--label-fraction", type=float, default=0.0,
                        help="label-scarce run: fine-tune with labels for this fraction of the training characters "
                             "(SimSiam still on all images), against ProtoNet on the same labelled characters")
    parser.add_argument("--protonet-seconds", type=float, default=0.0,
                        help="ProtoNet's training time (0 = the wall time of SimSiam + the first pipeline, measured)")
    args = parser.parse_args()
    if not args.omniglot:
        parser.error("give --omniglot (the CIFAR-10-LT comparison is benchmarks/longtail.py)")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    results: dict[str, Any] = {"settings": {k: v for k, v in vars(args).items()}}
    tic = time.perf_counter()
    if args.omniglot:
        results["omniglot"] = omniglot(args, work, timings)
    results["timings_s"] = timings | {"total": time.perf_counter() - tic}
    table = markdown(results, timings)
    (work / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (work / "results.md").write_text(table + "\n")
    print(table, file=sys.stderr)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
