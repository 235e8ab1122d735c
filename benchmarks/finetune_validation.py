"""Choose fine-tuning settings on the VALIDATION split, never on the test split.

Fine-tunes each candidate (recipe overrides) from one pretraining run on the training split of the
recipe's data, then scores it on the validation split alone: within-group and mixed N-way 1-shot
episodes with the prototype rule (for Omniglot with the three test alphabets held out, the
validation split is a whole held-out training alphabet). Every candidate's wall and process CPU
time and its images passed through the network are recorded, so candidates can be compared at
equal compute. Prints JSON (stdout); run folders are reused when complete.

    python benchmarks/finetune_validation.py --recipe omniglot_proto --data omniglot.csv \\
        --init runs/simsiam --candidate adam_backbone finetune.optimizer=adam finetune.embedding_dim=0 ...
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def validation_scores(run_dir: Path, data_path: str, way: int, episodes: int,
                      support_tta: tuple[int, ...] = ()) -> dict[str, Any]:
    """Prototype accuracy of N-way 1-shot episodes (within-group and mixed) on the validation split;
    with ``support_tta``, also for each number of augmented support views (the same episodes)."""
    from toolkit.data.groups import class_groups
    from toolkit.data.store import load_data
    from toolkit.engine.checkpoint import Checkpoint
    from toolkit.evaluate.episodes import run_episodes
    from toolkit.evaluate.job import embed, evaluation_recipe, support_embeddings
    from toolkit.evaluate.within_group import run_within_group_episodes

    ckpt = Checkpoint.load(run_dir)
    recipe = evaluation_recipe(ckpt, data=data_path)
    val = load_data(recipe.data).val
    if val is None or val.labels is None:
        raise SystemExit(f"error: {data_path} has no labeled validation split under this recipe")
    (emb,) = embed(ckpt, recipe, val)
    groups, names = class_groups(val.class_names, data_path)
    way = min(way, len(set(val.labels.tolist())))
    mixed = run_episodes(emb, val.labels, way, 1, 5, episodes, seed=0)
    within = run_within_group_episodes(emb, val.labels, groups, names, way, 1, 5, episodes, seed=0)
    scores: dict[str, Any] = {"way": way, "within_group": within["prototype"], "mixed": mixed["prototype"]}
    for views in support_tta:
        support = support_embeddings(ckpt, recipe, val, emb, views, seed=0)
        scores.setdefault("support_tta", {})[str(views)] = {
            "within_group": run_within_group_episodes(emb, val.labels, groups, names, way, 1, 5, episodes, seed=0,
                                                      support_embeddings=support)["prototype"],
            "mixed": run_episodes(emb, val.labels, way, 1, 5, episodes, seed=0, support_embeddings=support)["prototype"]}
    return scores


def main() -> None:
    from toolkit.config import load_recipe
    from toolkit.engine.run_folder import RunFolder
    from toolkit.finetune import finetune

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--init", required=True, help="pretraining run (or 'none')")
    parser.add_argument("--work", default="runs/finetune-validation")
    parser.add_argument("--way", type=int, default=20)
    parser.add_argument("--episodes", type=int, default=600)
    parser.add_argument("--support-tta", default="", help="also score with these numbers of augmented support views, "
                        "e.g. 0,2,4,8 (support-set test-time augmentation, on the same episodes)")
    parser.add_argument("--candidate", nargs="+", action="append", required=True, metavar=("NAME", "KEY=VALUE"),
                        help="a name and its --set overrides; repeat for each candidate")
    args = parser.parse_args()
    results: dict[str, Any] = {"recipe": args.recipe, "init": args.init, "split": "validation"}
    views = tuple(int(v) for v in args.support_tta.split(",") if v)
    for name, *sets in args.candidate:
        run_dir = Path(args.work) / name
        recipe = load_recipe(args.recipe, {"data.path": args.data, "finetune.init": args.init,
                                           "finetune.refit": False}, sets)
        wall, cpu = time.perf_counter(), time.process_time()
        if not RunFolder(run_dir).checkpoint.exists():
            finetune(recipe, run_dir)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        records = RunFolder(run_dir).read_metrics()
        passes = sum(int(r.get("img_per_s") and 1 or 0) for r in records)  # epochs trained
        results[name] = {"sets": sets, "wall_s": wall, "process_cpu_s": cpu, "epochs_trained": passes,
                         **validation_scores(run_dir, args.data, args.way, args.episodes, views)}
        print(json.dumps({name: results[name]}), file=sys.stderr, flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
