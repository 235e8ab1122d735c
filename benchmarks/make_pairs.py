"""Write image files and a pairs CSV for `toolkit score` from a run's own data (demo and benchmarks).

The built-in ``digits`` live in memory, so scoring them needs real files. Given a run (or a
checkpoint), this script lists the run's data exactly as training did (``toolkit.data.sources.load_splits``
on the checkpoint's recipe) and writes, under ``--out``:

    queries/<class>/<n>.png   the test split (images the model never trained on)
    gallery/<class>/<n>.png   the train split (up to --gallery per class)
    support/<class>/<n>.png   --shot train images per class (a few-shot support set)
    pairs.csv                 image_a,image_b,label over the queries: half same class, half not

    python benchmarks/make_pairs.py runs/demo/finetune --out runs/demo/pairs
    toolkit score runs/demo/finetune/export/encoder.onnx --pairs runs/demo/pairs/pairs.csv

In-memory images (digits) are saved as PNG at their own size; the scoring side then frames
them exactly as training did (``toolkit.data.store.decode_image``). Files are copied as they are.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from toolkit.data.sources import ImageSet  # noqa: E402


def write_images(images: ImageSet, root: Path, index: np.ndarray) -> tuple[list[str], list[int]]:
    """Writes ``images[index]`` as ``root/<class>/<n><ext>``; returns their paths and labels."""
    paths, labels = [], []
    for n, i in enumerate(index.tolist()):
        label = int(images.labels[i]) if images.labels is not None else -1
        folder = root / (images.class_names[label].replace("/", "_") if label >= 0 else "unlabeled")
        folder.mkdir(parents=True, exist_ok=True)
        turns = int(images.rotations[i]) if images.rotations is not None else 0
        if images.arrays is not None or turns:
            target = folder / f"{n:05d}.png"
            array = images.arrays[i] if images.arrays is not None else np.asarray(Image.open(images.paths[i]))
            Image.fromarray(np.ascontiguousarray(np.rot90(array, k=turns))).save(target)
        else:
            target = folder / f"{n:05d}{Path(images.paths[i]).suffix.lower()}"
            shutil.copyfile(images.paths[i], target)
        paths.append(str(target))
        labels.append(label)
    return paths, labels


def write_pairs_csv(path: Path, paths: list[str], labels: list[int] | None, count: int, seed: int = 0) -> None:
    """``count`` pairs over ``paths``, relative to the CSV's folder; with labels, half are same-class."""
    rng = np.random.default_rng(seed)
    rel = [str(Path(p).resolve().relative_to(path.parent.resolve())) for p in paths]
    a = rng.integers(0, len(paths), count)
    b = rng.integers(0, len(paths), count)
    if labels is not None:
        label_arr = np.asarray(labels)
        by_class = {c: np.flatnonzero(label_arr == c) for c in np.unique(label_arr)}
        same = rng.random(count) < 0.5
        for k in np.flatnonzero(same).tolist():  # the partner of a "same" pair: another image of a's class
            b[k] = rng.choice(by_class[label_arr[a[k]]])
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image_a", "image_b", "label"] if labels is not None else ["image_a", "image_b"])
        for i, j in zip(a.tolist(), b.tolist()):
            row = [rel[i], rel[j]]
            writer.writerow(row + [int(labels[i] == labels[j])] if labels is not None else row)


def per_class(labels: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``limit`` random indices of each class, in index order."""
    keep = [rng.permutation(np.flatnonzero(labels == c))[:limit] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="checkpoint .pt or run folder whose data (test split) to write")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--pairs", type=int, default=2000, help="rows of pairs.csv")
    parser.add_argument("--shot", type=int, default=5, help="support images per class")
    parser.add_argument("--gallery", type=int, default=50, help="gallery images per class")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from toolkit.data.sources import load_splits
    from toolkit.engine.checkpoint import Checkpoint

    splits = load_splits(Checkpoint.load(args.checkpoint).recipe.data)
    if splits.test is None or splits.test.labels is None or splits.train.labels is None:
        sys.exit(f"error: {args.checkpoint}: its data has no labelled test split to make pairs from")
    rng = np.random.default_rng(args.seed)
    if args.out.exists():
        shutil.rmtree(args.out)
    queries, labels = write_images(splits.test, args.out / "queries", np.arange(len(splits.test)))
    write_images(splits.train, args.out / "gallery", per_class(splits.train.labels, args.gallery, rng))
    write_images(splits.train, args.out / "support", per_class(splits.train.labels, args.shot, rng))
    write_pairs_csv(args.out / "pairs.csv", queries, labels, args.pairs, args.seed)
    print(f"wrote {len(queries)} query images, gallery, support ({args.shot} per class) and "
          f"{args.pairs} pairs under {args.out}")


if __name__ == "__main__":
    main()
