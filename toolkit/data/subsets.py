"""Subsets of an ``ImageSet``: class selection, held-out classes, stratified split, rotation classes,
long tail and limits (the ``[data]`` settings that ``toolkit.data.sources.load_splits`` applies)."""

from __future__ import annotations

import fnmatch
from dataclasses import replace

import numpy as np

from toolkit.data.image_set import ImageSet
from toolkit.errors import ToolkitError

ROTATION_SUFFIXES = ("", "@rot90", "@rot180", "@rot270")


def _relabel(images: ImageSet, class_names: list[str]) -> ImageSet:
    if images.labels is None:
        return images
    index = {c: i for i, c in enumerate(class_names)}
    labels = np.array([index[images.class_names[l]] for l in images.labels], dtype=np.int64)
    return replace(images, labels=labels, class_names=class_names)


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _class_mask(images: ImageSet, patterns: tuple[str, ...]) -> np.ndarray:
    if images.labels is None:
        raise ToolkitError("class selection (data.classes / data.holdout_classes) needs labeled data")
    chosen = np.array([_matches(c, patterns) for c in images.class_names], dtype=bool)
    return chosen[images.labels]


def _keep_classes(images: ImageSet, patterns: tuple[str, ...]) -> ImageSet:
    return images.subset(np.flatnonzero(_class_mask(images, patterns)))


def _hold_out(train: ImageSet, test: ImageSet | None, patterns: tuple[str, ...], source: str) -> tuple[ImageSet, ImageSet]:
    """Move whole classes into the test split: the few-shot setting of unseen classes."""
    held = _class_mask(train, patterns)
    if not held.any():
        raise ToolkitError(f"data.holdout_classes={list(patterns)} matches no class of {source}")
    if held.all():
        raise ToolkitError(f"data.holdout_classes={list(patterns)} holds out every class of {source}; nothing left to train on")
    held_out = train.subset(np.flatnonzero(held))
    if test is not None:
        extra = test.subset(np.flatnonzero(_class_mask(test, patterns)))
        held_out = _concat(held_out, extra)
    return train.subset(np.flatnonzero(~held)), held_out


def _concat(a: ImageSet, b: ImageSet) -> ImageSet:
    def cat(x, y):
        return None if x is None or y is None else np.concatenate([x, y])

    return ImageSet(paths=a.paths + b.paths, labels=cat(a.labels, b.labels), class_names=a.class_names,
                    arrays=cat(a.arrays, b.arrays), rotations=cat(a.rotations, b.rotations))


def _present(images: ImageSet) -> np.ndarray:
    return np.unique(images.labels) if images.labels is not None else np.array([], dtype=np.int64)


def _stratified_split(images: ImageSet, fraction: float, rng: np.random.Generator,
                      min_count: int = 2) -> tuple[ImageSet, ImageSet]:
    """Hold out ``fraction`` of every class (at least one image when the class has ``min_count`` or more;
    a smaller class keeps all its images)."""
    train_idx: list[np.ndarray] = []
    test_idx: list[np.ndarray] = []
    for label in _present(images):
        members = rng.permutation(np.flatnonzero(images.labels == label))
        n_test = (min(len(members) - 1, max(1, int(round(fraction * len(members)))))
                  if len(members) >= max(2, min_count) else 0)
        test_idx.append(members[:n_test])
        train_idx.append(members[n_test:])
    return images.subset(np.sort(np.concatenate(train_idx))), images.subset(np.sort(np.concatenate(test_idx)))


def add_rotation_classes(images: ImageSet) -> ImageSet:
    """Each class c gains classes c@rot90, c@rot180 and c@rot270 (rotated copies of its images).

    Common practice on Omniglot (Santoro et al. 2016; Snell et al. 2017).
    """
    assert images.labels is not None
    n_cls = len(images.class_names)
    parts = []
    for k in range(4):
        rotated = ImageSet(paths=list(images.paths), labels=images.labels + k * n_cls, class_names=[],
                           arrays=images.arrays, rotations=np.full(len(images), k, dtype=np.int64))
        parts.append(rotated)
    out = parts[0]
    for part in parts[1:]:
        out = _concat(out, part)
    out.class_names = [c + s for s in ROTATION_SUFFIXES for c in images.class_names]
    return out


def long_tail(images: ImageSet, ratio: float, rng: np.random.Generator) -> ImageSet:
    """Keep n_max x ratio^(-i/(C-1)) images of the i-th class (exponential profile of CIFAR-10-LT, Cao et al. 2019)."""
    if images.labels is None:
        raise ToolkitError("data.imbalance_ratio needs labeled data")
    labels = _present(images)
    n_max = max(int(np.sum(images.labels == c)) for c in labels)
    keep: list[np.ndarray] = []
    for i, label in enumerate(labels):
        members = rng.permutation(np.flatnonzero(images.labels == label))
        n = max(1, int(n_max * ratio ** (-i / max(1, len(labels) - 1))))
        keep.append(members[:n])
    return images.subset(np.sort(np.concatenate(keep)))


def limit(images: ImageSet, count: int, rng: np.random.Generator) -> ImageSet:
    """A subset of ``count`` images, proportional per class (stratified) when labeled."""
    if count >= len(images):
        return images
    if images.labels is None:
        return images.subset(np.sort(rng.choice(len(images), size=count, replace=False)))
    chosen: list[np.ndarray] = []
    for label in _present(images):
        members = rng.permutation(np.flatnonzero(images.labels == label))
        chosen.append(members[: max(1, int(round(count * len(members) / len(images))))])
    return images.subset(np.sort(np.concatenate(chosen)))
