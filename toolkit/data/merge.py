"""Merge the validation split back into the training split (``finetune --refit``)."""

from __future__ import annotations

import numpy as np
import torch

from toolkit.data.store import ImageStore, LoadedData
from toolkit.errors import ToolkitError


def with_validation_in_train(data: LoadedData) -> LoadedData:
    """``data`` with its validation images appended to the training split and no validation split.

    Labels are matched by class name, so a validation class that the training split lacks (whole
    classes held out for validation) becomes a new training class.

    Raises:
        ToolkitError: the images are decoded per step (``LazyImages``): refit needs the decoded cache.
    """
    train, val = data.train, data.val
    if val is None:
        return data
    if not isinstance(train.images, torch.Tensor) or not isinstance(val.images, torch.Tensor):
        raise ToolkitError("finetune.refit needs the decoded image cache; raise data.cache_gb so the images fit in memory")
    if train.labels is None or val.labels is None:
        raise ToolkitError("finetune.refit needs labeled training and validation images")
    names = list(train.class_names)
    index = {name: i for i, name in enumerate(names)}
    for name in val.class_names:
        if name not in index:
            index[name] = len(names)
            names.append(name)
    val_labels = np.asarray([index[val.class_names[int(label)]] for label in val.labels], dtype=np.int64)
    merged = ImageStore(torch.cat([train.images, val.images]), np.concatenate([train.labels, val_labels]),
                        names, list(train.paths) + list(val.paths), list(train.skipped) + list(val.skipped))
    return LoadedData(train=merged, test=data.test, source=data.source,
                      notes=[*data.notes, f"refit: the {len(val)} validation images train too"], val=None)
