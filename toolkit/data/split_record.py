"""What defines a model's data split, recorded in its checkpoint so later commands can check theirs.

A ``SplitRecord`` holds the ``[data]`` settings that decide the split (source, split seed, test
and validation fractions, held-out and chosen classes), a hash of the sorted train / validation
/ test path lists, and the ids (64-bit hashes of absolute paths) of the train and validation
images, so that ``finetune --init``, ``evaluate`` and ``study`` can tell whether an image they
are about to report on was trained on (``toolkit.data.split_check``). A fine-tuning run also
keeps the ids of its init's train and validation images (``pretraining_ids``) and how many of
its test images those hold (only with ``--allow-seen-pretraining``).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from toolkit.config import DataConfig
from toolkit.data.image_set import DataSplits, ImageSet

SETTINGS = ("source", "split_seed", "test_fraction", "val_fraction", "holdout_classes", "classes")
KEY_NAMES = {"source": "data.path", "split_seed": "data.split_seed", "test_fraction": "data.test_fraction",
             "val_fraction": "data.val_fraction", "holdout_classes": "data.holdout_classes", "classes": "data.classes",
             "train": "the train paths", "val": "the validation paths", "test": "the test paths"}
_EMPTY = np.zeros(0, dtype=np.int64)


def _absolute(path: str, source: str) -> str:
    return path if source == "digits" else os.path.abspath(os.path.expanduser(path))


def path_ids(paths: list[str], source: str) -> np.ndarray:
    """Sorted unique int64 ids (blake2b, 8 bytes) of the absolute paths (``digits/NNNN`` as they are)."""
    ids = {int.from_bytes(hashlib.blake2b(_absolute(p, source).encode(), digest_size=8).digest(), "little", signed=True)
           for p in paths}
    return np.array(sorted(ids), dtype=np.int64)


def paths_hash(paths: list[str], source: str) -> str:
    """sha256 (16 hex digits) of the sorted unique paths relative to the data's root (so a moved folder keeps it)."""
    if source == "digits":
        names = set(paths)
    else:
        root = os.path.abspath(os.path.expanduser(source))
        root = os.path.dirname(root) if os.path.isfile(root) else root
        names = {os.path.relpath(a, root) if a.startswith(root + os.sep) else a
                 for a in (_absolute(p, source) for p in paths)}
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:16]


def source_key(path: str) -> str:
    """``data.path`` as compared between runs: ``digits``, or the absolute path."""
    return path if path == "digits" else os.path.abspath(os.path.expanduser(path))


@dataclass(frozen=True, eq=False)
class SplitRecord:
    """The split of a run (see the module docstring). ``test_ids`` are kept in memory only."""

    source: str
    split_seed: int
    test_fraction: float
    val_fraction: float
    holdout_classes: tuple[str, ...]
    classes: tuple[str, ...]
    hashes: dict[str, str]
    counts: dict[str, int]
    train_ids: np.ndarray = field(default_factory=lambda: _EMPTY)
    val_ids: np.ndarray = field(default_factory=lambda: _EMPTY)
    test_ids: np.ndarray = field(default_factory=lambda: _EMPTY)
    pretraining_ids: np.ndarray = field(default_factory=lambda: _EMPTY)
    init: str = ""  # the checkpoint fine-tuning started from
    seen_in_pretraining: int = 0  # test images in the init's train/validation split
    allow_seen_pretraining: bool = False

    @classmethod
    def of(cls, cfg: DataConfig, splits: DataSplits) -> SplitRecord:
        """The record of ``splits`` as ``load_splits(cfg)`` made them."""
        parts: dict[str, ImageSet | None] = {"train": splits.train, "val": splits.val, "test": splits.test}
        paths = {k: (list(v.paths) if v is not None else []) for k, v in parts.items()}
        return cls(source=source_key(cfg.path), split_seed=int(cfg.split_seed), test_fraction=float(cfg.test_fraction),
                   val_fraction=float(cfg.val_fraction), holdout_classes=tuple(cfg.holdout_classes),
                   classes=tuple(cfg.classes), hashes={k: paths_hash(p, cfg.path) for k, p in paths.items()},
                   counts={k: len(set(p)) for k, p in paths.items()}, train_ids=path_ids(paths["train"], cfg.path),
                   val_ids=path_ids(paths["val"], cfg.path), test_ids=path_ids(paths["test"], cfg.path))

    def value(self, key: str) -> Any:
        """A setting, or the hash of a split (``train``, ``val``, ``test``)."""
        return self.hashes.get(key, "") if key in ("train", "val", "test") else getattr(self, key)

    def differences(self, other: SplitRecord) -> list[str]:
        """The keys (settings first, then split hashes) whose values differ from ``other``'s."""
        return [k for k in (*SETTINGS, "train", "val", "test") if _norm(self.value(k)) != _norm(other.value(k))]

    def seen_by(self, other: SplitRecord) -> tuple[int, int, int]:
        """Images of this split that ``other``'s run used: (test in its train/val, val in its train, test in its init's)."""
        used = np.union1d(other.train_ids, other.val_ids)
        return (int(np.isin(self.test_ids, used).sum()), int(np.isin(self.val_ids, other.train_ids).sum()),
                int(np.isin(self.test_ids, other.pretraining_ids).sum()))

    def with_init(self, init: SplitRecord | None, path: str, allow: bool) -> SplitRecord:
        """This fine-tuning split with its init's train and validation ids (and their overlap with its test split)."""
        if init is None:
            return replace(self, init=path, allow_seen_pretraining=allow)
        ids = np.union1d(np.union1d(init.train_ids, init.val_ids), init.pretraining_ids)
        return replace(self, pretraining_ids=ids, init=path, allow_seen_pretraining=allow,
                       seen_in_pretraining=int(np.isin(self.test_ids, ids).sum()))

    def with_init_of(self, other: SplitRecord) -> SplitRecord:
        """This split with ``other``'s record of the init (resuming a fine-tuning run)."""
        return replace(self, pretraining_ids=other.pretraining_ids, init=other.init,
                       seen_in_pretraining=other.seen_in_pretraining, allow_seen_pretraining=other.allow_seen_pretraining)

    def to_dict(self) -> dict[str, Any]:
        """Plain values and int64 tensors (``torch.load(weights_only=True)`` reads them)."""
        return {"source": self.source, "split_seed": self.split_seed, "test_fraction": self.test_fraction,
                "val_fraction": self.val_fraction, "holdout_classes": list(self.holdout_classes),
                "classes": list(self.classes), "hashes": dict(self.hashes), "counts": dict(self.counts),
                "train_ids": torch.from_numpy(self.train_ids), "val_ids": torch.from_numpy(self.val_ids),
                "pretraining_ids": torch.from_numpy(self.pretraining_ids), "init": self.init,
                "seen_in_pretraining": self.seen_in_pretraining, "allow_seen_pretraining": self.allow_seen_pretraining}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SplitRecord:
        def ids(key: str) -> np.ndarray:
            value = d.get(key)
            return _EMPTY if value is None else np.asarray(value, dtype=np.int64)

        return cls(source=str(d["source"]), split_seed=int(d["split_seed"]), test_fraction=float(d["test_fraction"]),
                   val_fraction=float(d["val_fraction"]), holdout_classes=tuple(d.get("holdout_classes") or ()),
                   classes=tuple(d.get("classes") or ()), hashes={str(k): str(v) for k, v in d["hashes"].items()},
                   counts={str(k): int(v) for k, v in (d.get("counts") or {}).items()}, train_ids=ids("train_ids"),
                   val_ids=ids("val_ids"), pretraining_ids=ids("pretraining_ids"), init=str(d.get("init", "")),
                   seen_in_pretraining=int(d.get("seen_in_pretraining", 0)),
                   allow_seen_pretraining=bool(d.get("allow_seen_pretraining", False)))


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def record_of(cfg: DataConfig) -> SplitRecord:
    """List the files of ``cfg`` (no decoding) and return the record of their split."""
    from toolkit.data.sources import load_splits

    return SplitRecord.of(cfg, load_splits(cfg))
