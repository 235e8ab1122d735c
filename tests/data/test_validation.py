"""The validation split: per class from train, a val/ folder as it is, whole classes beside held-out test classes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shape_image, write_image
from toolkit.config import DataConfig
from toolkit.data.sources import load_splits
from toolkit.errors import ToolkitError


def _names(images) -> set[str]:  # noqa: ANN001
    return {images.class_names[label] for label in np.unique(images.labels)}


def test_val_fraction_of_every_class_disjoint_from_train_and_test() -> None:
    splits = load_splits(DataConfig(path="digits", test_fraction=0.2, val_fraction=0.1))
    assert splits.val is not None
    train, val, test = set(splits.train.paths), set(splits.val.paths), set(splits.test.paths)
    assert not (train & val) and not (val & test) and not (train & test)
    assert len(train | val | test) == 1797
    for label in range(10):
        n_val = int(np.sum(splits.val.labels == label))
        n_pool = n_val + int(np.sum(splits.train.labels == label))  # val is drawn from the train pool
        assert abs(n_val - 0.1 * n_pool) <= 1


def test_the_test_split_does_not_move_when_validation_is_added() -> None:
    with_val = load_splits(DataConfig(path="digits", val_fraction=0.1))
    without = load_splits(DataConfig(path="digits", val_fraction=0.0))
    assert with_val.test.paths == without.test.paths and without.val is None
    assert set(with_val.train.paths) | set(with_val.val.paths) == set(without.train.paths)


def test_val_folder_is_used_as_it_is(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("val", 3), ("test", 2)):
        for label in range(3):
            for i in range(count):
                write_image(tmp_path / split / f"k{label}" / f"{i}.png", shape_image(label, rng))
    splits = load_splits(DataConfig(path=str(tmp_path), val_fraction=0.5))
    assert (len(splits.train), len(splits.val), len(splits.test)) == (18, 9, 6)
    assert all("/val/" in p for p in splits.val.paths)
    assert [splits.val.class_names[l] for l in splits.val.labels] == [Path(p).parent.name for p in splits.val.paths]


def test_val_folder_with_an_unknown_class_is_a_one_line_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split, label in (("train", 0), ("test", 1), ("val", 2)):
        write_image(tmp_path / split / f"k{label}" / "0.png", shape_image(label, rng))
    with pytest.raises(ToolkitError, match="val/ has class 'k2'"):
        load_splits(DataConfig(path=str(tmp_path)))


def test_held_out_classes_give_validation_classes_disjoint_from_test_classes() -> None:
    splits = load_splits(DataConfig(path="digits", holdout_classes=("7", "8", "9"), val_fraction=0.1))
    train, val, test = _names(splits.train), _names(splits.val), _names(splits.test)
    assert test == {"7", "8", "9"}
    assert len(val) == 2  # max(2, round(0.1 x 7)) whole classes
    assert not (val & test) and not (val & train) and not (train & test)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 1797


def test_validation_holds_out_whole_groups_like_omniglot_alphabets(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for alphabet in ("A", "B", "C", "D", "E"):
        for char in range(3):
            for i in range(2):
                write_image(tmp_path / alphabet / f"c{char}" / f"{i}.png", shape_image(char, rng, size=8))
    splits = load_splits(DataConfig(path=str(tmp_path), holdout_classes=("E/*",), val_fraction=0.25, rotations=True))
    val_groups = {n.split("/")[0] for n in _names(splits.val)}
    train_groups = {n.split("/")[0] for n in _names(splits.train)}
    assert len(val_groups) == 1 and not (val_groups & train_groups) and "E" not in val_groups | train_groups
    assert len(_names(splits.val)) == 3 * 4  # one alphabet's 3 characters, each with its 3 rotation classes


def test_val_fraction_out_of_range_is_an_error() -> None:
    with pytest.raises(ToolkitError, match=r"data.val_fraction=1.0: must be in \[0, 1\)"):
        load_splits(DataConfig(path="digits", val_fraction=1.0))


def test_classes_below_the_minimum_give_no_validation_images(tmp_path) -> None:
    """data.val_min_images: a rare class keeps all its images for training, and the notes say how many."""
    import numpy as np
    from PIL import Image

    from toolkit.config import load_recipe
    from toolkit.data.sources import load_splits

    counts = {"big": 30, "mid": 10, "rare": 4}
    for name, n in counts.items():
        for i in range(n):
            (tmp_path / "d" / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((8, 8), i * 7 % 255, dtype=np.uint8)).save(tmp_path / "d" / name / f"{i}.png")
    splits = load_splits(load_recipe(None, {"data.path": str(tmp_path / "d"), "data.test_fraction": 0.0,
                                            "data.val_fraction": 0.2, "data.val_min_images": 10}).data)
    per_class = {n: int(np.sum(np.asarray(splits.val.labels) == splits.val.class_names.index(n))) for n in counts}
    assert per_class == {"big": 6, "mid": 2, "rare": 0}  # round(0.2 x n) for classes of 10 or more, none below
    assert any("1 classes under data.val_min_images=10" in note for note in splits.notes)
