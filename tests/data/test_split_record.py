"""The split a model remembers: its record, the checks against it, and the one group rule of validation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import shape_image, write_image
from toolkit.config import DataConfig
from toolkit.data.sources import load_splits
from toolkit.data.split_check import check_evaluation, check_init, check_same_split
from toolkit.data.split_record import SplitRecord, record_of
from toolkit.engine.checkpoint import Checkpoint
from toolkit.errors import ToolkitError

DIGITS = DataConfig(path="digits")


def _used(cfg: DataConfig) -> set[str]:
    splits = load_splits(cfg)
    return set(splits.train.paths) | set(splits.val.paths if splits.val is not None else [])


def _test(cfg: DataConfig) -> set[str]:
    return set(load_splits(cfg).test.paths)


def test_overlap_counts_equal_set_intersections_of_the_path_lists() -> None:
    other = dataclasses.replace(DIGITS, split_seed=1)
    ours, theirs = record_of(other), record_of(DIGITS)
    test_seen, val_seen, _ = ours.seen_by(theirs)
    brute_test = len(_test(other) & _used(DIGITS))
    brute_val = len(set(load_splits(other).val.paths) & set(load_splits(DIGITS).train.paths))
    assert (test_seen, val_seen) == (brute_test, brute_val) and brute_test > 200
    assert ours.differences(theirs)[0] == "split_seed" and theirs.differences(record_of(DIGITS)) == []
    assert record_of(DIGITS).hashes == theirs.hashes  # deterministic


def test_evaluation_on_another_seed_is_refused_naming_the_key() -> None:
    with pytest.raises(ToolkitError, match=r"of the 359 test images were in its train or validation split "
                                           r"\(data.split_seed is 1 here but 0 in run\)"):
        check_evaluation(record_of(DIGITS), record_of(dataclasses.replace(DIGITS, split_seed=1)), "run")
    notes = check_evaluation(record_of(DIGITS), record_of(DIGITS), "run")
    assert notes["split_check"] == "the checkpoint's split" and notes["allow_seen_pretraining"] is False


def test_no_test_split_means_the_train_split_is_what_is_checked() -> None:
    with pytest.raises(ToolkitError, match="evaluated .train split: the data has no test split. images were in its"):
        check_evaluation(record_of(DIGITS), record_of(dataclasses.replace(DIGITS, test_fraction=0.0)), "run")


@pytest.mark.parametrize("classes", [("7", "8"), ("2", "5", "9"), ("0",)])
def test_fewer_classes_test_on_no_image_that_all_classes_trained_on(classes: tuple[str, ...]) -> None:
    chosen = dataclasses.replace(DIGITS, classes=classes)
    assert _test(chosen) <= _test(DIGITS)  # a class's test images do not depend on the other classes
    assert not (_test(chosen) & _used(DIGITS))
    assert check_init(record_of(DIGITS), record_of(chosen), "pre", allow=False) == 0


def test_held_out_classes_seen_in_pretraining_need_the_flag() -> None:
    held = dataclasses.replace(DIGITS, holdout_classes=("7", "8", "9"))
    seen = len(_test(held) & _used(DIGITS))
    assert seen > 300
    with pytest.raises(ToolkitError, match=rf"--init pre: {seen} of the 533 test images here were in its train or "
                                           r"validation split \(data.holdout_classes is \['7', '8', '9'\] here but \[\] "
                                           r"in pre\); .* --allow-seen-pretraining"):
        check_init(record_of(DIGITS), record_of(held), "pre", allow=False)
    assert check_init(record_of(DIGITS), record_of(held), "pre", allow=True) == seen
    recorded = record_of(held).with_init(record_of(DIGITS), "pre", allow=True)
    assert recorded.seen_in_pretraining == seen and recorded.allow_seen_pretraining
    notes = check_evaluation(recorded, record_of(held), "ft")
    assert notes["allow_seen_pretraining"] is True and notes["test_images_seen_in_pretraining"] == seen
    refused = dataclasses.replace(recorded, allow_seen_pretraining=False)
    with pytest.raises(ToolkitError, match="were in the pretraining split of its init pre"):
        check_evaluation(refused, record_of(held), "ft")


def test_record_round_trips_through_a_checkpoint_and_old_checkpoints_load(tmp_path: Path) -> None:
    record = record_of(dataclasses.replace(DIGITS, holdout_classes=("7",))).with_init(record_of(DIGITS), "pre", True)
    Checkpoint(kind="pretrain", recipe_dict={}, weights={}, preprocessing=None, split=record).save(tmp_path / "a.pt")
    loaded = Checkpoint.load(tmp_path / "a.pt").split
    assert loaded is not None and loaded.differences(record) == []
    for key in ("train_ids", "val_ids", "pretraining_ids"):
        assert np.array_equal(getattr(loaded, key), getattr(record, key))
    assert (loaded.seen_in_pretraining, loaded.init, loaded.allow_seen_pretraining) == (record.seen_in_pretraining, "pre", True)
    assert SplitRecord.from_dict(record.to_dict()).counts == record.counts

    payload = torch.load(tmp_path / "a.pt", weights_only=True)
    payload["format_version"] = 2
    del payload["data"]["split"]
    torch.save(payload, tmp_path / "v2.pt")
    old = Checkpoint.load(tmp_path / "v2.pt")
    assert old.split is None and old.format_version == 2
    check_same_split(old.split, record, "v2", "hint")  # a warning, not an error
    assert check_evaluation(old.split, record, "v2")["split_check"].startswith("not possible")


def test_a_changed_file_list_is_named_when_resuming(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for label in range(3):
        for i in range(5):
            write_image(tmp_path / f"k{label}" / f"{i}.png", shape_image(label, rng, size=8))
    cfg = DataConfig(path=str(tmp_path))
    before = record_of(cfg)
    write_image(tmp_path / "k0" / "new.png", shape_image(0, rng, size=8))
    with pytest.raises(ToolkitError, match="the train paths differ from run's .the files under data.path changed"):
        check_same_split(before, record_of(cfg), "run", "hint")


def test_validation_groups_follow_the_csv_group_column(tmp_path: Path) -> None:
    """Eight classes in four groups named only by the CSV: validation takes whole groups."""
    rng = np.random.default_rng(0)
    rows = []
    for label in range(8):
        for i in range(3):
            write_image(tmp_path / f"{label}_{i}.png", shape_image(label, rng, size=8))
            rows.append(f"{label}_{i}.png,k{label},G{label // 2}")
    (tmp_path / "m.csv").write_text("path,label,group\n" + "\n".join(rows) + "\n")
    for seed in range(6):
        splits = load_splits(DataConfig(path=str(tmp_path / "m.csv"), holdout_classes=("k7", "k6"), val_fraction=0.3,
                                        split_seed=seed))
        val = {splits.val.class_names[label] for label in np.unique(splits.val.labels)}
        groups = {f"G{int(name[1:]) // 2}" for name in val}
        assert len(val) == 2 * len(groups)  # both classes of every chosen group, never one of a pair


def test_validation_groups_are_the_first_path_component(tmp_path: Path) -> None:
    """Classes two folders deep (``A/x/c0``): the group is ``A``, as for within-group episodes."""
    rng = np.random.default_rng(0)
    for alphabet in "ABCD":
        for sub in ("x", "y"):
            for i in range(2):
                write_image(tmp_path / alphabet / sub / "c" / f"{i}.png", shape_image(0, rng, size=8))
    for seed in range(6):
        splits = load_splits(DataConfig(path=str(tmp_path), holdout_classes=("D/*",), val_fraction=0.2, split_seed=seed))
        val = {splits.val.class_names[label] for label in np.unique(splits.val.labels)}
        train = {splits.train.class_names[label] for label in np.unique(splits.train.labels)}
        assert {n.split("/")[0] for n in val}.isdisjoint(n.split("/")[0] for n in train)
