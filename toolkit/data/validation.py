"""The validation split: a ``val/`` folder as it is, or whole classes held out beside held-out test classes.

See ``toolkit.data.sources`` (``load_splits``) for where these are applied; the per-class split
of seen classes is ``sources._stratified_split``, the same rule as the test split's.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolkit.config import DataConfig
from toolkit.data.groups import group_names_of
from toolkit.data.sources import ImageSet, _present, _relabel, scan_folder
from toolkit.errors import ToolkitError


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


def hold_out_val_classes(train: ImageSet, fraction: float, rng: np.random.Generator,
                         data_path: str = "") -> tuple[ImageSet, ImageSet | None]:
    """Move whole classes, group by group, from ``train`` into a validation split.

    A class's group is what within-group episodes use (``toolkit.data.groups.group_names_of``:
    the first path component under the data root, or a CSV manifest's ``group`` column). Groups are drawn in random order until the validation split has at least
    ``max(2, round(fraction x classes))`` classes (two are needed for pairs and open-set episodes),
    so for Omniglot whole alphabets are held out, as for the test split. With fewer than four
    train classes there is nothing to spare: no validation split (None).
    """
    assert train.labels is not None
    present = _present(train)
    if len(present) < 4:
        return train, None
    target = max(2, int(round(fraction * len(present))))
    names = group_names_of([train.class_names[label] for label in present], data_path)
    groups: dict[str, list[int]] = {}
    for label, group in zip(present, names):
        groups.setdefault(group, []).append(int(label))
    chosen: list[int] = []
    for key in rng.permutation(sorted(groups)):
        if len(chosen) >= target:
            break
        if len(present) - len(chosen) - len(groups[key]) < 2:
            continue  # keep at least two train classes
        chosen += groups[key]
    if len(chosen) < 2:
        return train, None
    held = np.isin(train.labels, chosen)
    return train.subset(np.flatnonzero(~held)), train.subset(np.flatnonzero(held))
