"""The group of every class: the alphabet of an Omniglot character, or a CSV manifest's ``group`` column.

Lake et al. 2015 draw each 20-way one-shot run from ONE alphabet; to do the same on any data,
``toolkit evaluate --within-group`` needs a group per class. For folder data it is the first
path component of the class (``Greek/character01`` -> ``Greek``); a CSV manifest may name it in
a ``group`` column instead. Rotation classes (``data.rotations``) keep their source's group.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from toolkit.data.subsets import ROTATION_SUFFIXES
from toolkit.errors import ToolkitError


def _base_class(name: str) -> str:
    """The class a rotation class was made from (``Greek/c01@rot90`` -> ``Greek/c01``)."""
    for suffix in ROTATION_SUFFIXES[1:]:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def first_path_component(class_name: str) -> str:
    """``Alphabet/character`` -> ``Alphabet``; a class without ``/`` is its own group."""
    return _base_class(class_name).split("/", 1)[0]


def manifest_groups(path: Path) -> dict[str, str] | None:
    """The ``label -> group`` map of a CSV manifest's ``group`` column, or None without one.

    Raises:
        ToolkitError: a label appears with two groups, or a row's group is empty.
    """
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        if "group" not in columns or "label" not in columns:
            return None
        mapping: dict[str, str] = {}
        for line, row in enumerate(reader, start=2):
            row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
            label, group = row.get("label", ""), row.get("group", "")
            if not group:
                raise ToolkitError(f"{path}:{line}: empty group for label {label!r}")
            if mapping.setdefault(label, group) != group:
                raise ToolkitError(f"{path}:{line}: label {label!r} is in group {mapping[label]!r} on an "
                                   f"earlier row and {group!r} here; a class belongs to one group")
    return mapping


def class_groups(class_names: Sequence[str], data_path: str) -> tuple[np.ndarray, list[str]]:
    """The group of every class, as int ids indexed by label, and the group names the ids index.

    Args:
        class_names: the data's class names, indexed by label.
        data_path: ``data.path``; a CSV manifest with a ``group`` column supplies the groups,
            otherwise the first path component of each class name does.

    Returns:
        ``(ids, names)``: ``len(class_names)`` int64 ids into ``names`` (sorted group names).
    """
    per_class = group_names_of(class_names, data_path)
    names = sorted(set(per_class))
    index = {g: i for i, g in enumerate(names)}
    return np.array([index[g] for g in per_class], dtype=np.int64), names


def group_names_of(class_names: Sequence[str], data_path: str) -> list[str]:
    """The group name of every class (see ``class_groups``)."""
    path = Path(data_path).expanduser()
    mapping = manifest_groups(path) if path.suffix.lower() == ".csv" and path.is_file() else None
    if mapping is None:
        return [first_path_component(c) for c in class_names]
    missing = [c for c in class_names if _base_class(c) not in mapping]
    if missing:
        raise ToolkitError(f"{path}: class {missing[0]!r} has no group in the 'group' column")
    return [mapping[_base_class(c)] for c in class_names]
