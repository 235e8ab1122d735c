"""The Omniglot data of the few-shot benchmarks: a manifest of the extracted background folders,
the test alphabets, and the labelled quarter of the label-scarce run."""

from __future__ import annotations

import csv
import filecmp
from pathlib import Path

TEST_ALPHABETS = ("Korean", "Sanskrit", "Tagalog")


def omniglot_manifest(root: Path, out: Path) -> tuple[Path, int, int]:
    """A CSV manifest (path, label = alphabet/character) of every extracted Omniglot folder under ``root``.

    The background "small" zips share two alphabets (Greek, Latin); an image that appears in two
    folders is listed once (checked byte for byte; a differing duplicate is an error).
    """
    seen: dict[tuple[str, str], Path] = {}
    rows: list[tuple[str, str]] = []
    for part in sorted(p for p in root.iterdir() if p.is_dir()):
        for image in sorted(part.glob("*/*/*.png")):
            label = f"{image.parent.parent.name}/{image.parent.name}"
            key = (label, image.name)
            if key in seen:
                if not filecmp.cmp(seen[key], image, shallow=False):
                    raise SystemExit(f"error: {image} and {seen[key]} share a name but differ")
                continue
            seen[key] = image
            rows.append((str(image.resolve()), label))
    if not rows:
        raise SystemExit(f"error: no <alphabet>/<character>/*.png under the folders of {root}")
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "label"])
        writer.writerows(rows)
    return out, len(rows), len({label for _, label in rows})


def labelled_subset(manifest: Path, fraction: float, seed: int = 0) -> list[str]:
    """``data.classes`` patterns for a random ``fraction`` of the training characters plus the test alphabets.

    The test alphabets stay in (held out whole as the test split, as in the full run), so the
    label-scarce run is scored on exactly the same test images and episodes.
    """
    import numpy as np

    with manifest.open(newline="") as handle:
        labels = sorted({row["label"] for row in csv.DictReader(handle)})
    train_chars = [label for label in labels if label.split("/")[0] not in TEST_ALPHABETS]
    rng = np.random.default_rng(seed)
    keep = sorted(rng.choice(train_chars, max(2, int(round(fraction * len(train_chars)))), replace=False).tolist())
    return keep + [f"{alphabet}/*" for alphabet in TEST_ALPHABETS]
