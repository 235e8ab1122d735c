"""The checks that keep trained-on images out of what is reported, from two ``SplitRecord``s.

What matters is which images a run used, not whether every setting is the same: a fine-tuning
split whose test images are all outside the pretraining run's train and validation splits is
sound even with other ``data.classes``. Each refusal is one line naming the first ``[data]`` key
(or split) that differs, since that is what the user changed. Checkpoints written before splits
were recorded pass with a warning.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from toolkit.console import info, warn
from toolkit.data.split_record import KEY_NAMES, SplitRecord
from toolkit.errors import ToolkitError

UNRECORDED = "records no data split (written before checkpoints recorded one)"


def difference(theirs: SplitRecord, ours: SplitRecord, owner: str) -> str:
    """``'data.split_seed is 1 here but 0 in <owner>'``: the first key that differs (or the test paths)."""
    diffs = theirs.differences(ours)
    key = diffs[0] if diffs else "test"
    if key in ("train", "val", "test"):
        return f"{KEY_NAMES[key]} differ from {owner}'s (the files under data.path changed, or a data limit did)"
    return f"{KEY_NAMES[key]} is {_show(ours.value(key))} here but {_show(theirs.value(key))} in {owner}"


def _show(value: Any) -> str:
    return repr(list(value)) if isinstance(value, tuple) else repr(value)


def check_same_split(theirs: SplitRecord | None, ours: SplitRecord, owner: str, hint: str) -> None:
    """The split must be exactly the recorded one (resuming a run, reusing a study's run).

    Raises:
        ToolkitError: a setting or a split's paths differ; ``hint`` says what to do.
    """
    if theirs is None:
        warn(f"{owner} {UNRECORDED}: its split cannot be checked")
        return
    if theirs.differences(ours):
        raise ToolkitError(f"{difference(theirs, ours, owner)}; {hint}")


def check_evaluation(theirs: SplitRecord | None, ours: SplitRecord, owner: str) -> dict[str, Any]:
    """Refuse to report on images the checkpoint's run trained or selected on; return ``eval.json``'s protocol notes.

    The evaluated test split must miss the checkpoint's train and validation splits, and the
    validation split (which calibrates thresholds) its train split. Test images in the
    pretraining split of a fine-tuned checkpoint's init pass only when it was fine-tuned with
    ``--allow-seen-pretraining``, with a warning.

    Raises:
        ToolkitError: one line naming the count and the key that differs.
    """
    if theirs is None:
        warn(f"{owner} {UNRECORDED}: cannot check that the evaluated images were not trained on")
        return {"split_check": "not possible: " + UNRECORDED}
    evaluated = replace(ours, test_ids=ours.test_ids if len(ours.test_ids) else ours.train_ids)  # no test split: train
    name = "test" if len(ours.test_ids) else "evaluated (train split: the data has no test split)"
    test_seen, val_seen, test_pretrained = evaluated.seen_by(theirs)
    if test_seen:
        raise ToolkitError(f"{owner}: {test_seen} of the {len(evaluated.test_ids)} {name} images were in its train or "
                           f"validation split ({difference(theirs, ours, owner)}); evaluate with the checkpoint's split")
    if val_seen:
        raise ToolkitError(f"{owner}: {val_seen} of the {len(ours.val_ids)} validation images were in its train split "
                           f"({difference(theirs, ours, owner)}); evaluate with the checkpoint's split")
    if test_pretrained and not theirs.allow_seen_pretraining:
        raise ToolkitError(f"{owner}: {test_pretrained} of the {len(evaluated.test_ids)} {name} images were in the pretraining "
                           f"split of its init {theirs.init} ({difference(theirs, ours, owner)})")
    if test_pretrained:
        warn(f"{test_pretrained} of the {len(evaluated.test_ids)} {name} images were in the pretraining split of {theirs.init} "
             "(fine-tuned with --allow-seen-pretraining): the numbers are not those of unseen images")
    diffs = theirs.differences(ours)
    if diffs:
        info(f"split: {difference(theirs, ours, owner)}; none of the evaluated images were in its train or validation split")
    return {"split_check": ("the checkpoint's split" if not diffs else
                            "differs in " + ", ".join(KEY_NAMES[k] for k in diffs) + "; no evaluated image was trained on"),
            "allow_seen_pretraining": theirs.allow_seen_pretraining,
            "test_images_seen_in_pretraining": test_pretrained}


def seen_in_init(init: SplitRecord, ours: SplitRecord) -> int:
    """Test images of ``ours`` in the init's train or validation split (or in its own init's)."""
    used = np.union1d(np.union1d(init.train_ids, init.val_ids), init.pretraining_ids)
    return int(np.isin(ours.test_ids, used).sum())


def check_init(init: SplitRecord | None, ours: SplitRecord, owner: str, allow: bool) -> int:
    """Refuse a fine-tuning split whose test images the init's run used, unless ``allow``; return their count.

    Raises:
        ToolkitError: one line naming the count, the key that differs and ``--allow-seen-pretraining``.
    """
    if init is None:
        warn(f"--init {owner} {UNRECORDED}: cannot check that the test images were not in its pretraining")
        return 0
    seen = seen_in_init(init, ours)
    if seen and not allow:
        raise ToolkitError(f"--init {owner}: {seen} of the {len(ours.test_ids)} test images here were in its train or "
                           f"validation split ({difference(init, ours, owner)}); fine-tune with its split, or pass "
                           "--allow-seen-pretraining to report on them anyway (eval.json records it)")
    if seen:
        warn(f"{seen} of the {len(ours.test_ids)} test images were in the pretraining split of {owner} "
             "(--allow-seen-pretraining): evaluate's numbers will not be those of unseen images")
    return seen
