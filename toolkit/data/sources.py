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
group by group (a class's group as ``toolkit.data.groups`` defines it: the first folder of the
class, e.g. an Omniglot alphabet, or a CSV manifest's ``group`` column), disjoint from
the test classes. Validation is what fine-tuning monitors and early-stops on and what
``toolkit evaluate`` calibrates thresholds on; the test split is only reported on.

This module only lists files and labels; ``toolkit.data.store`` decodes them.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from toolkit.config import DataConfig
from toolkit.data.csv_files import is_file, open_csv, resolve_entry
from toolkit.data.image_set import DataSplits, ImageSet
from toolkit.data.walk import find_files, report_skipped
from toolkit.data.subsets import (_class_mask, _hold_out, _keep_classes, _present, _relabel, _stratified_split,
                                  add_rotation_classes, limit, long_tail)
from toolkit.data.validation import hold_out_val_classes
from toolkit.errors import ToolkitError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


def load_splits(cfg: DataConfig) -> DataSplits:
    """List the images named by ``cfg.path`` and apply the split settings of ``cfg``.

    Raises:
        ToolkitError: the path does not exist, holds no images, or a CSV row names a missing file.
    """
    if not 0 <= cfg.val_fraction < 1:
        raise ToolkitError(f"data.val_fraction={cfg.val_fraction}: must be in [0, 1)")
    train, test, source = _discover(cfg)
    val = val_folder(cfg, train)
    notes: list[str] = []
    if cfg.classes and cfg.holdout_classes:  # whole-class splits are drawn among the chosen classes
        train, test, val = _chosen_classes(cfg, train, test, val)
    rng = np.random.default_rng(cfg.split_seed)
    if cfg.holdout_classes:
        train, test = _hold_out(train, test, cfg.holdout_classes, cfg.path)
        notes.append(f"{len(_present(test))} held-out classes form the test split")
        if val is not None:  # a val/ folder: its test classes must not reach validation
            val = val.subset(np.flatnonzero(~_class_mask(val, cfg.holdout_classes)))
    elif test is None and train.labeled and cfg.test_fraction > 0:
        train, test = _stratified_split(train, cfg.test_fraction, rng)
        notes.append(f"test split: {cfg.test_fraction:.0%} of each class")
    if cfg.imbalance_ratio > 1:
        # Before validation is carved out: the user's labelled data is the long-tailed set, so
        # validation comes from it (and rare classes keep their few images, data.val_min_images).
        train = long_tail(train, cfg.imbalance_ratio, rng)
        notes.append(f"train split made long-tailed with imbalance ratio {cfg.imbalance_ratio:g}")
    if val is None and train.labeled and cfg.val_fraction > 0:
        # A generator of its own, so the test split is the same with or without validation.
        val_rng = np.random.default_rng([cfg.split_seed, 1])
        if cfg.holdout_classes:
            train, val = hold_out_val_classes(train, cfg.val_fraction, val_rng, cfg.path)
            if val is not None:
                notes.append(f"{len(_present(val))} other held-out classes form the validation split")
        else:
            small = int(sum(np.sum(train.labels == c) < cfg.val_min_images for c in _present(train)))
            train, val = _stratified_split(train, cfg.val_fraction, val_rng, min_count=cfg.val_min_images)
            notes.append(f"validation split: {cfg.val_fraction:.0%} of each train class"
                         + (f"; {small} classes under data.val_min_images={cfg.val_min_images} images give none "
                            "and keep all theirs for training" if small else ""))
    if cfg.classes and not cfg.holdout_classes:
        # Per-class splits first: a class's test images do not depend on which other classes are
        # chosen, so a run on some classes tests on none of the images a run on all of them trained on.
        train, test, val = _chosen_classes(cfg, train, test, val)
    if cfg.rotations:
        if not train.labeled:
            raise ToolkitError("data.rotations needs labeled data: rotated images become new classes")
        train, test = add_rotation_classes(train), (add_rotation_classes(test) if test else None)
        val = add_rotation_classes(val) if val is not None and len(val) else val
    if cfg.train_limit:
        train = limit(train, cfg.train_limit, rng)
    if cfg.test_limit and test is not None:
        test = limit(test, cfg.test_limit, rng)
    return DataSplits(train=train, test=test, source=source, notes=notes, val=val if val is not None and len(val) else None)


def _chosen_classes(cfg: DataConfig, train: ImageSet, test: ImageSet | None,
                    val: ImageSet | None) -> tuple[ImageSet, ImageSet | None, ImageSet | None]:
    """Keep the classes matching ``data.classes`` in every split."""
    train = _keep_classes(train, cfg.classes)
    if len(train) == 0:
        raise ToolkitError(f"data.classes={list(cfg.classes)} matches no class of {cfg.path}")
    return (train, _keep_classes(test, cfg.classes) if test is not None else None,
            _keep_classes(val, cfg.classes) if val is not None else None)


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
    files, skipped = find_files(root, IMAGE_EXTENSIONS)  # folder links followed, loops and broken links reported
    report_skipped(root, skipped)
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


def val_folder(cfg: DataConfig, train: ImageSet) -> ImageSet | None:
    """The ``val/`` folder beside ``train/`` and ``test/``, labeled with the train split's class list."""
    if cfg.path == "digits":
        return None
    root = Path(cfg.path).expanduser()
    if not (root.is_dir() and (root / "train").is_dir() and (root / "test").is_dir() and (root / "val").is_dir()):
        return None
    val = scan_folder(root / "val", class_names=train.class_names if train.labeled else None)
    if val.labeled != train.labeled:
        raise ToolkitError(f"--data {root}: train/ and val/ must both have class sub-folders or neither")
    unknown = sorted(set(val.class_names) - set(train.class_names))
    if unknown:
        raise ToolkitError(f"--data {root}: val/ has class {unknown[0]!r}, which neither train/ nor test/ has")
    return _relabel(val, train.class_names)


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
