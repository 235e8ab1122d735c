"""Where images come from: folders, CSV manifests and the built-in ``digits`` set, split into train/test.

``--data`` accepts
  * ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images), so everything runs offline;
  * a folder with ``train/`` and ``test/`` sub-folders (the CIFAR layout);
  * a folder with one sub-folder per class (nested folders are fine: the class of an image is the
    path of its folder, e.g. ``Greek/character01`` for Omniglot); a test split is held out per class;
  * a CSV manifest with a ``path`` column and an optional ``label`` column;
  * a folder of images with no sub-folders: unlabeled, enough for pretraining.

This module only lists files and labels; ``toolkit.data.store`` decodes them.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from toolkit.config import DataConfig
from toolkit.data.image_set import DataSplits, ImageSet
from toolkit.data.subsets import (_hold_out, _keep_classes, _present, _relabel, _stratified_split, add_rotation_classes,
                                  limit, long_tail)
from toolkit.errors import ToolkitError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


def load_splits(cfg: DataConfig) -> DataSplits:
    """List the images named by ``cfg.path`` and apply the split settings of ``cfg``.

    Raises:
        ToolkitError: the path does not exist, holds no images, or a CSV row names a missing file.
    """
    train, test, source = _discover(cfg)
    notes: list[str] = []
    if cfg.classes:
        train, test = _keep_classes(train, cfg.classes), (_keep_classes(test, cfg.classes) if test else None)
        if len(train) == 0:
            raise ToolkitError(f"data.classes={list(cfg.classes)} matches no class of {cfg.path}")
    rng = np.random.default_rng(cfg.split_seed)
    if cfg.holdout_classes:
        train, test = _hold_out(train, test, cfg.holdout_classes, cfg.path)
        notes.append(f"{len(_present(test))} held-out classes form the test split")
    elif test is None and train.labeled and cfg.test_fraction > 0:
        train, test = _stratified_split(train, cfg.test_fraction, rng)
        notes.append(f"test split: {cfg.test_fraction:.0%} of each class")
    if cfg.rotations:
        if not train.labeled:
            raise ToolkitError("data.rotations needs labeled data: rotated images become new classes")
        train, test = add_rotation_classes(train), (add_rotation_classes(test) if test else None)
    if cfg.imbalance_ratio > 1:
        train = long_tail(train, cfg.imbalance_ratio, rng)
        notes.append(f"train split made long-tailed with imbalance ratio {cfg.imbalance_ratio:g}")
    if cfg.train_limit:
        train = limit(train, cfg.train_limit, rng)
    if cfg.test_limit and test is not None:
        test = limit(test, cfg.test_limit, rng)
    return DataSplits(train=train, test=test, source=source, notes=notes)


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

    Relative paths are relative to the CSV's folder. Every file must exist.
    """
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        if "path" not in columns:
            raise ToolkitError(f"{path}: the header must have a 'path' column (and optionally 'label'); found {columns}")
        rows = [{k.strip(): (v or "").strip() for k, v in row.items() if k is not None} for row in reader]
    if not rows:
        raise ToolkitError(f"{path}: the manifest has no rows")
    has_label = "label" in columns
    paths: list[str] = []
    names: list[str] = []
    for line, row in enumerate(rows, start=2):
        file = Path(row["path"]).expanduser()
        file = file if file.is_absolute() else path.parent / file
        if not file.is_file():
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
