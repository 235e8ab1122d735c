"""Choose the ``omniglot_proto`` settings on VALIDATION alphabets, never on the test alphabets.

The training alphabets of the shared Omniglot "background small" data (every alphabet except
the test alphabets Korean, Sanskrit and Tagalog) are split again: ``--val`` alphabets (default
Greek and Japanese_(katakana)) are held out whole, the rest train. One SimSiam run on the rest,
then each candidate of prototypical fine-tuning from it; every candidate is scored with
within-alphabet 20-way 1-shot episodes (Lake et al. 2015) and mixed-alphabet ones on the
validation alphabets. Prints JSON; the best candidate is the one with the highest within-alphabet
prototype accuracy.

    python benchmarks/proto_validation.py --manifest omniglot.csv --pretrain-epochs 5 --finetune-epochs 5
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

TEST_ALPHABETS = ("Korean", "Sanskrit", "Tagalog")
AFFINE = {"finetune.augment.affine_rotation": 10.0, "finetune.augment.affine_shear": 10.0,
          "finetune.augment.affine_scale_min": 0.9, "finetune.augment.affine_scale_max": 1.1,
          "finetune.augment.affine_translate": 0.05, "finetune.augment.affine_fill": 255}
CANDIDATES: dict[str, dict[str, Any]] = {
    "euclidean": {"finetune.proto_distance": "euclidean"},
    "cosine": {"finetune.proto_distance": "cosine"},
    "cosine+affine": {"finetune.proto_distance": "cosine", **AFFINE},
}


def main() -> None:
    from toolkit.config import load_recipe
    from toolkit.engine.run_folder import RunFolder
    from toolkit.evaluate.job import EpisodeSpec, evaluate
    from toolkit.finetune import finetune
    from toolkit.pretrain import pretrain

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--manifest", required=True, help="CSV path,label (label = alphabet/character)")
    parser.add_argument("--val", default="Greek,Japanese_(katakana)", help="validation alphabets (comma-separated)")
    parser.add_argument("--work", default="runs/proto-validation")
    parser.add_argument("--pretrain-epochs", type=int, default=5)
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--episodes", type=int, default=300)
    parser.add_argument("--only", default="", help="comma-separated candidates (default: all)")
    args = parser.parse_args()
    val = [a for a in args.val.split(",") if a]
    if set(val) & set(TEST_ALPHABETS):
        raise SystemExit("error: validation alphabets must not be test alphabets")
    import csv

    with open(args.manifest, newline="") as handle:
        alphabets = sorted({row["label"].split("/")[0] for row in csv.DictReader(handle)})
    train_alphabets = [a for a in alphabets if a not in TEST_ALPHABETS]
    data = {"data.path": args.manifest, "data.classes": [f"{a}/*" for a in train_alphabets],
            "data.holdout_classes": [f"{a}/*" for a in val]}
    work = Path(args.work)
    results: dict[str, Any] = {"train_alphabets": [a for a in train_alphabets if a not in val], "validation_alphabets": val,
                               "pretrain_epochs": args.pretrain_epochs, "finetune_epochs": args.finetune_epochs}
    tic = time.perf_counter()
    simsiam = load_recipe("omniglot", {**data, "train.epochs": args.pretrain_epochs, "train.knn_every": 1000,
                                       "train.workers": 0})
    if not RunFolder(work / "simsiam").checkpoint.exists():
        pretrain(simsiam, work / "simsiam")
    results["pretrain_s"] = time.perf_counter() - tic
    spec = EpisodeSpec(way=20, shot=1, query=5, episodes=args.episodes, within_group=True)
    chosen = [c for c in args.only.split(",") if c] or list(CANDIDATES)
    for name in chosen:
        tic = time.perf_counter()
        recipe = load_recipe("omniglot_proto", {**data, **CANDIDATES[name], "finetune.init": str(work / "simsiam"),
                                                "finetune.epochs": args.finetune_epochs, "train.knn_every": 1000,
                                                "train.workers": 0})
        finetune(recipe, work / name)
        seconds = time.perf_counter() - tic
        report = evaluate(work / name, spec=spec, plots=False)
        results[name] = {"within_group_20way_1shot": report.fewshot["within_group"]["prototype"],
                         "mixed_20way_1shot": report.fewshot["prototype"], "finetune_s": seconds}
        print(json.dumps({name: results[name]}), file=sys.stderr, flush=True)
    scored = [n for n in chosen if n in results]
    results["best"] = max(scored, key=lambda n: results[n]["within_group_20way_1shot"]["mean"])
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
