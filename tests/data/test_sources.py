"""Data sources, splits and decoding: every --data form, and every data error."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shape_image, write_image
from toolkit.config import DataConfig
from toolkit.data.sources import load_splits
from toolkit.errors import ToolkitError
from toolkit.data.store import build_store, load_data


def test_digits_builtin_split_is_stratified() -> None:
    splits = load_splits(DataConfig(path="digits", test_fraction=0.2, val_fraction=0))
    assert len(splits.train) + len(splits.test) == 1797 and splits.val is None
    assert splits.class_names == [str(d) for d in range(10)]
    for label in range(10):  # every class keeps ~20% in test
        n_test = int(np.sum(splits.test.labels == label))
        n_all = n_test + int(np.sum(splits.train.labels == label))
        assert abs(n_test - 0.2 * n_all) <= 1


def test_class_folder_rgb_and_grayscale(class_folder: Path) -> None:
    data = load_data(DataConfig(path=str(class_folder), image_size=16, channels=3, test_fraction=0.25))
    assert data.train.class_names == ["c0", "c1", "c2", "c3"]
    assert len(data.train) + len(data.test) + len(data.val) == 48
    assert tuple(data.train.images.shape[1:]) == (3, 16, 16)
    gray = load_data(DataConfig(path=str(class_folder), image_size=16, channels=1))
    assert tuple(gray.train.images.shape[1:]) == (1, 16, 16)


def test_train_test_layout(split_folder: Path) -> None:
    splits = load_splits(DataConfig(path=str(split_folder), val_fraction=0))
    assert (len(splits.train), len(splits.test)) == (30, 12)
    assert splits.train.class_names == splits.test.class_names == ["k0", "k1", "k2"]


def test_unlabeled_folder(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(5):
        write_image(tmp_path / "u" / f"{i}.png", shape_image(i, rng))
    splits = load_splits(DataConfig(path=str(tmp_path / "u")))
    assert splits.train.labels is None and splits.test is None


def test_nested_class_folders_use_the_relative_path(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for alphabet in ("Greek", "Latin"):
        for char in ("character01", "character02"):
            for i in range(3):
                write_image(tmp_path / "o" / alphabet / char / f"{i}.png", shape_image(i, rng))
    splits = load_splits(DataConfig(path=str(tmp_path / "o"), holdout_classes=("Latin/*",)))
    assert sorted({splits.class_names[l] for l in splits.train.labels}) == ["Greek/character01", "Greek/character02"]
    assert sorted({splits.class_names[l] for l in splits.test.labels}) == ["Latin/character01", "Latin/character02"]


def test_csv_manifest_relative_paths_and_labels(class_folder: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    rows = [f"{p.relative_to(tmp_path).as_posix()},{p.parent.name}" for p in sorted(class_folder.rglob("*.png"))]
    manifest.write_text("path,label\n" + "\n".join(rows) + "\n")
    splits = load_splits(DataConfig(path=str(manifest)))
    assert len(splits.train) + len(splits.test) + len(splits.val) == 48 and splits.class_names == ["c0", "c1", "c2", "c3"]
    unlabeled = tmp_path / "u.csv"
    unlabeled.write_text("path\n" + "\n".join(r.split(",")[0] for r in rows) + "\n")
    assert load_splits(DataConfig(path=str(unlabeled))).train.labels is None


def test_csv_row_with_missing_file_is_an_error_naming_the_line(class_folder: Path, tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    first = next(class_folder.rglob("*.png"))
    manifest.write_text(f"path,label\n{first},a\nnot/there.png,b\n")
    with pytest.raises(ToolkitError, match=re.escape(f"{manifest}:3: image 'not/there.png' does not exist")):
        load_splits(DataConfig(path=str(manifest)))


@pytest.mark.parametrize("header", ["file,label", ""])
def test_csv_without_path_column(tmp_path: Path, header: str) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text(header + "\n")
    with pytest.raises(ToolkitError, match="'path' column"):
        load_splits(DataConfig(path=str(manifest)))


def test_empty_folder_and_missing_path(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ToolkitError, match="no images found"):
        load_splits(DataConfig(path=str(tmp_path / "empty")))
    with pytest.raises(ToolkitError, match="no such file or folder"):
        load_splits(DataConfig(path=str(tmp_path / "nope")))


def test_corrupt_image_is_skipped_with_one_warning_and_counted(class_folder: Path, capsys: pytest.CaptureFixture) -> None:
    (class_folder / "c1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    (class_folder / "c2" / "empty.jpg").write_bytes(b"")
    data = load_data(DataConfig(path=str(class_folder), image_size=16, test_fraction=0.0, val_fraction=0.0))
    assert len(data.train) == 48
    assert sorted(Path(p).name for p, _ in data.skipped) == ["broken.png", "empty.jpg"]
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "skipped 2 unreadable image(s)" in err


def test_lazy_store_decodes_on_access_and_skips_corrupt_files(class_folder: Path) -> None:
    (class_folder / "c1" / "broken.png").write_bytes(b"garbage")
    splits = load_splits(DataConfig(path=str(class_folder), test_fraction=0.0, val_fraction=0.0))
    eager = build_store(splits.train, 16, 3)
    lazy = build_store(splits.train, 16, 3, cache_gb=0.0)
    assert len(lazy) == len(eager) == 48 and len(lazy.skipped) == 1
    assert np.array_equal(lazy.images[5].numpy(), eager.images[5].numpy())
    assert np.array_equal(lazy.images[2:6].numpy(), eager.images[2:6].numpy())


def test_rotation_classes_are_rotated_copies(class_folder: Path) -> None:
    data = load_data(DataConfig(path=str(class_folder), image_size=16, test_fraction=0.0, val_fraction=0.0, rotations=True))
    names = data.train.class_names
    assert len(names) == 16 and "c0@rot90" in names and "c3@rot270" in names
    base = data.train.images[0].numpy()
    rot90 = data.train.images[48].numpy()  # same file, the next block of copies
    assert data.train.paths[0] == data.train.paths[48]
    assert np.array_equal(rot90, np.rot90(base, k=1, axes=(1, 2)))


def test_long_tail_profile_follows_the_exponential_formula() -> None:
    balanced = np.bincount(load_splits(DataConfig(path="digits", val_fraction=0.0)).train.labels, minlength=10)
    splits = load_splits(DataConfig(path="digits", imbalance_ratio=10.0))
    assert splits.val is not None
    # The long tail is the labelled data a user has: validation is carved out of it afterwards.
    counts = np.bincount(splits.train.labels, minlength=10) + np.bincount(splits.val.labels, minlength=10)
    n_max = balanced.max()
    for i in range(10):  # n_i = n_max * ratio^(-i/(C-1)), Cao et al. 2019, capped by what the class has
        assert counts[i] == min(balanced[i], max(1, int(n_max * 10.0 ** (-i / 9))))
    assert counts[0] / counts[9] == pytest.approx(10, rel=0.1)
    test_counts = np.bincount(splits.test.labels, minlength=10)
    assert test_counts.max() - test_counts.min() <= 2  # the test split stays balanced


def test_validation_of_a_long_tail_leaves_rare_classes_their_images() -> None:
    splits = load_splits(DataConfig(path="digits", imbalance_ratio=100.0, val_min_images=5))
    assert splits.val is not None
    train = np.bincount(splits.train.labels, minlength=10)
    val = np.bincount(splits.val.labels, minlength=10)
    rare = (train + val) < 5
    assert rare.any() and np.all(val[rare] == 0)  # a class under the minimum gives validation none
    assert val[0] > 5 * max(1, val[~rare][-1])  # validation keeps the long-tailed profile, not a balanced one


def test_class_selection_and_limits() -> None:
    splits = load_splits(DataConfig(path="digits", classes=("1", "7"), train_limit=100, test_limit=20))
    assert set(np.unique(splits.train.labels)) == {1, 7}
    assert abs(len(splits.train) - 100) <= 2 and abs(len(splits.test) - 20) <= 2
    with pytest.raises(ToolkitError, match="matches no class"):
        load_splits(DataConfig(path="digits", classes=("x*",)))
    with pytest.raises(ToolkitError, match="holds out every class"):
        load_splits(DataConfig(path="digits", holdout_classes=("*",)))


def test_unusual_image_modes_decode(tmp_path: Path) -> None:
    """16-bit grayscale, palette, CMYK and transparent images all become 8-bit RGB or L."""
    from PIL import Image

    from toolkit.data.store import decode_image

    sixteen = tmp_path / "sixteen.png"
    Image.fromarray((np.arange(20 * 30).reshape(20, 30) * 100).astype(np.uint16)).save(sixteen)
    out = decode_image(str(sixteen), 16, 1)
    assert out.shape == (1, 16, 16) and out.dtype == np.uint8 and out.max() > 200  # stretched, not clipped to 255s
    transparent = tmp_path / "clear.png"
    Image.new("RGBA", (10, 14), (0, 0, 0, 0)).save(transparent)
    assert decode_image(str(transparent), 8, 3).min() == 255  # transparent reads as white
    cmyk = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (12, 12), (0, 255, 255, 0)).save(cmyk)
    assert decode_image(str(cmyk), 8, 3).shape == (3, 8, 8)
    palette = tmp_path / "pal.gif"
    Image.new("P", (9, 9), 3).save(palette)
    assert decode_image(str(palette), 8, 3).shape == (3, 8, 8)
