"""The validation split as whole classes held out beside held-out test classes.

See ``toolkit.data.sources`` (``load_splits``) for where this is applied; a ``val/`` folder is read
there as it is (``sources.val_folder``), and the per-class split of seen classes is
``subsets._stratified_split``, the same rule as the test split's.
"""

from __future__ import annotations

import numpy as np

from toolkit.data.groups import group_names_of
from toolkit.data.image_set import ImageSet
from toolkit.data.subsets import _present


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
