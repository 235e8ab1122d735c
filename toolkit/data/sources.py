"""Where images come from: folders, CSV manifests and the built-in ``digits`` set, split into train/test.

``--data`` accepts
  * ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images), so everything runs offline;
  * a folder with ``train/`` and ``test/`` sub-folders (the CIFAR layout), optionally ``val/`` beside them;
  * a folder with one sub-folder per class (nested folders are fine: the class of an image is the
    path of its folder, e.g. ``Greek/character01`` for Omniglot); a test split is held out per class;
  * a CSV manifest with a ``path`` column and an optional ``label`` column;
  * a folder of images with no sub-folders: unlabeled, enough for pretraining.

Validation split (``data.val_fraction``, default 0.1): a ``val/`` folder beside ``train/`` and
``test/`` is used as it is. Otherwise, for labeled data, validation images are drawn from the
train split: ``val_fraction`` of every class, or, when classes are held out for the test split
(``data.holdout_classes``), whole classes: ``val_fraction`` of the remaining classes, taken
group by group (a group is a class's parent folder, e.g. an Omniglot alphabet), disjoint from
the test classes. Validation is what fine-tuning monitors and early-stops on and what
``toolkit evaluate`` calibrates thresholds on; the test split is only reported on.

This module only lists files and labels; ``toolkit.data.store`` decodes them.
"""

from __future__ import annotations

import csv
import fnmatch
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from toolkit.config import DataConfig
from toolkit.data.csv_files import is_file, open_csv, resolve_entry
from toolkit.errors import ToolkitError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
ROTATION_SUFFIXES = ("", "@rot90", "@rot180", "@rot270")


@dataclass
class ImageSet:
    """A list of images with optional labels.

    Attributes:
        paths: one entry per image; a file path, or a name for in-memory images.
        labels: int64 array (N,) indexing ``class_names``, or None when unlabeled.
        class_names: the names of all classes of the data set (shared by train and test).
        arrays: in-memory images (N, H, W) uint8 when the set has no files (``digits``).
        rotations: quarter turns (N,) applied after decoding (rotation classes), or None.
    """

    paths: list[str]
    labels: np.ndarray | None
    class_names: list[str]
    arrays: np.ndarray | None = None
    rotations: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def labeled(self) -> bool:
        return self.labels is not None

    def subset(self, index: np.ndarray) -> ImageSet:
        """The images at ``index`` (an int array), keeping the class list."""
        index = np.asarray(index, dtype=np.int64)
        return ImageSet(
            paths=[self.paths[i] for i in index],
            labels=None if self.labels is None else self.labels[index],
            class_names=self.class_names,
            arrays=None if self.arrays is None else self.arrays[index],
            rotations=None if self.rotations is None else self.rotations[index],
        )


@dataclass
class DataSplits:
    """The train split (pretraining, kNN memory bank), the test split (reported evaluation) and the
    validation split (monitoring, early stopping, threshold calibration), disjoint files."""

    train: ImageSet
    test: ImageSet | None
    source: str
    notes: list[str] = field(default_factory=list)
    val: ImageSet | None = None

    @property
    def class_names(self) -> list[str]:
        return self.train.class_names


def load_splits(cfg: DataConfig) -> DataSplits:
    """List the images named by ``cfg.path`` and apply the split settings of ``cfg``.

    Raises:
        ToolkitError: the path does not exist, holds no images, or a CSV row names a missing file.
    """
    if not 0 <= cfg.val_fraction < 1:
        raise ToolkitError(f"data.val_fraction={cfg.val_fraction}: must be in [0, 1)")
    from toolkit.data.validation import hold_out_val_classes, val_folder

    train, test, source = _discover(cfg)
    val = val_folder(cfg, train)
    notes: list[str] = []
    if cfg.classes:
        train, test = _keep_classes(train, cfg.classes), (_keep_classes(test, cfg.classes) if test else None)
        val = _keep_classes(val, cfg.classes) if val is not None else None
        if len(train) == 0:
            raise ToolkitError(f"data.classes={list(cfg.classes)} matches no class of {cfg.path}")
    rng = np.random.default_rng(cfg.split_seed)
    if cfg.holdout_classes:
        train, test = _hold_out(train, test, cfg.holdout_classes, cfg.path)
        notes.append(f"{len(_present(test))} held-out classes form the test split")
        if val is not None:  # a val/ folder: its test classes must not reach validation
            val = val.subset(np.flatnonzero(~_class_mask(val, cfg.holdout_classes)))
    elif test is None and train.labeled and cfg.test_fraction > 0:
        train, test = _stratified_split(train, cfg.test_fraction, rng)
        notes.append(f"test split: {cfg.test_fraction:.0%} of each class")
    if val is None and train.labeled and cfg.val_fraction > 0:
        # A generator of its own, so the test split is the same with or without validation.
        val_rng = np.random.default_rng([cfg.split_seed, 1])
        if cfg.holdout_classes:
            train, val = hold_out_val_classes(train, cfg.val_fraction, val_rng)
            if val is not None:
                notes.append(f"{len(_present(val))} other held-out classes form the validation split")
        else:
            train, val = _stratified_split(train, cfg.val_fraction, val_rng)
            notes.append(f"validation split: {cfg.val_fraction:.0%} of each train class")
    if cfg.rotations:
        if not train.labeled:
            raise ToolkitError("data.rotations needs labeled data: rotated images become new classes")
        train, test = add_rotation_classes(train), (add_rotation_classes(test) if test else None)
        val = add_rotation_classes(val) if val is not None and len(val) else val
    if cfg.imbalance_ratio > 1:
        train = long_tail(train, cfg.imbalance_ratio, rng)
        notes.append(f"train split made long-tailed with imbalance ratio {cfg.imbalance_ratio:g}")
    if cfg.train_limit:
        train = limit(train, cfg.train_limit, rng)
    if cfg.test_limit and test is not None:
        test = limit(test, cfg.test_limit, rng)
    return DataSplits(train=train, test=test, source=source, notes=notes, val=val if val is not None and len(val) else None)


def _discover(cfg: DataConfig) -> tuple[ImageSet, ImageSet | None, str]:
    if cfg.path == "digits":
        return _digits(), None, "digits (scikit-learn's 8x8 handwritten digits)"
    path = Path(cfg.path).expanduser()
    if not path.exists():
        raise ToolkitError(f"--data {cfg.path}: no such file or folder (give an image folder, a CSV manifest or 'digits')")
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise ToolkitError(f"--data {path}: a file must be a CSV manifest with columns path,label")
        return read_manifest(path), None, f"CSV manifest {path}"
    if (path / "train").is_dir() and (path / "test").is_dir():
        train = scan_folder(path / "train")
        test = scan_folder(path / "test", class_names=train.class_names if train.labeled else None)
        if train.labeled != test.labeled:
            raise ToolkitError(f"--data {path}: train/ and test/ must both have class sub-folders or neither")
        merged = sorted(set(train.class_names) | set(test.class_names))
        return _relabel(train, merged), _relabel(test, merged), f"folder {path} (train/ and test/)"
    images = scan_folder(path)
    kind = "class folders" if images.labeled else "unlabeled images"
    return images, None, f"folder {path} ({kind})"


def scan_folder(root: Path, class_names: list[str] | None = None) -> ImageSet:
    """List the images under ``root``; the class of an image is its folder relative to ``root``.

    Images lying directly in ``root`` (and none deeper) make an unlabeled set.
    """
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        raise ToolkitError(f"--data {root}: no images found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    folders = [p.parent.relative_to(root).as_posix() for p in files]
    if all(f == "." for f in folders):
        return ImageSet(paths=[str(p) for p in files], labels=None, class_names=[])
    loose = [p for p, f in zip(files, folders) if f == "."]
    if loose:
        raise ToolkitError(f"--data {root}: {loose[0].name} lies beside class sub-folders; move it into a class folder")
    names = sorted(set(folders)) if class_names is None else list(class_names)
    index = {name: i for i, name in enumerate(sorted(set(names) | set(folders)))}
    labels = np.array([index[f] for f in folders], dtype=np.int64)
    return ImageSet(paths=[str(p) for p in files], labels=labels, class_names=sorted(index, key=index.get))


def read_manifest(path: Path) -> ImageSet:
    """Read a CSV manifest with a ``path`` column and an optional ``label`` column.

    Relative paths are relative to the CSV's folder. Every file must exist. The file is UTF-8
    (a byte-order mark is accepted), read by ``toolkit.data.csv_files.open_csv``.
    """
    with open_csv(path) as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        if "path" not in columns:
            raise ToolkitError(f"{path}: the header must have a 'path' column (and optionally 'label'); found {columns}")
        rows = []
        for row in reader:
            cells = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            if any(cells.values()):  # rows of empty cells are not images
                rows.append((reader.line_num, cells))
    if not rows:
        raise ToolkitError(f"{path}: the manifest has no rows")
    has_label = "label" in columns
    paths: list[str] = []
    names: list[str] = []
    for line, row in rows:
        file = resolve_entry(row["path"], path.parent)
        if not row["path"] or not is_file(file):
            raise ToolkitError(f"{path}:{line}: image {row['path']!r} does not exist")
        if has_label and not row.get("label"):
            raise ToolkitError(f"{path}:{line}: empty label for {row['path']!r}")
        paths.append(str(file))
        names.append(row.get("label", ""))
    if not has_label:
        return ImageSet(paths=paths, labels=None, class_names=[])
    classes = sorted(set(names))
    index = {c: i for i, c in enumerate(classes)}
    return ImageSet(paths=paths, labels=np.array([index[n] for n in names], dtype=np.int64), class_names=classes)


def _digits() -> ImageSet:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    arrays = np.clip(np.rint(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return ImageSet(
        paths=[f"digits/{i:04d}" for i in range(len(arrays))],
        labels=bunch.target.astype(np.int64),
        class_names=[str(c) for c in bunch.target_names],
        arrays=arrays,
    )


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


def _stratified_split(images: ImageSet, fraction: float, rng: np.random.Generator) -> tuple[ImageSet, ImageSet]:
    """Hold out ``fraction`` of every class (at least one image when the class has two or more)."""
    train_idx: list[np.ndarray] = []
    test_idx: list[np.ndarray] = []
    for label in _present(images):
        members = rng.permutation(np.flatnonzero(images.labels == label))
        n_test = min(len(members) - 1, max(1, int(round(fraction * len(members))))) if len(members) > 1 else 0
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
