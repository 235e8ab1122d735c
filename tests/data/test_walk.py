"""Symbolic links in image folders: followed the same way by training, image lists (embed, index build) and --support."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from scoring.image_lists import read_support_folder
from toolkit.data.image_files import read_image_list
from toolkit.data.sources import scan_folder


def _png(path: Path, value: int) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4), value, dtype=np.uint8)).save(path)
    return str(path)


@pytest.fixture
def linked_tree(tmp_path: Path) -> tuple[Path, list[str], list[str]]:
    """root/a (real, with a linked sub-folder, a loop, a broken and a self-linked file), root/b -> elsewhere.

    Returns the root, the images a listing must give (as paths under root, sorted by hand) and the
    entries it must report as skipped.
    """
    shared = tmp_path / "shared"
    _png(shared / "b1.png", 1)
    _png(shared / "b2.png", 2)
    _png(tmp_path / "extra" / "x.png", 3)
    root = tmp_path / "root"
    _png(root / "a" / "a1.png", 4)
    os.symlink(shared, root / "b")  # a whole class folder that is a link
    os.symlink(tmp_path / "extra", root / "a" / "more")  # a linked sub-folder inside a class
    os.symlink(root, root / "a" / "loop")  # back to an ancestor: must not recurse forever
    os.symlink(tmp_path / "gone.png", root / "a" / "broken.png")
    os.symlink(root / "a" / "self.png", root / "a" / "self.png")
    want = [str(root / "a" / "a1.png"), str(root / "a" / "more" / "x.png"), str(root / "b" / "b1.png"),
            str(root / "b" / "b2.png")]
    skipped = [str(root / "a" / "broken.png"), str(root / "a" / "loop"), str(root / "a" / "self.png")]
    return root, want, skipped


def test_image_lists_follow_folder_links_and_report_loops_and_broken_links(
        linked_tree: tuple[Path, list[str], list[str]], capfd: pytest.CaptureFixture[str]) -> None:
    root, want, skipped = linked_tree
    assert read_image_list(root) == want  # what embed and index build embed
    err = "".join(capfd.readouterr())
    assert f"{root}: skipped 3 entries" in err and " and 2 more" in err
    assert any(s in err for s in skipped)


def test_support_and_training_folders_list_the_same_images(linked_tree: tuple[Path, list[str], list[str]]) -> None:
    root, want, _ = linked_tree
    support = read_support_folder(root)
    assert support.class_names == ["a", "b"]
    assert support.paths == want and support.labels.tolist() == [0, 0, 1, 1]
    training = scan_folder(root)
    assert training.paths == want
    assert [training.class_names[i] for i in training.labels] == ["a", "a/more", "b", "b"]


def test_a_support_class_that_links_to_the_support_folder_is_skipped(tmp_path: Path) -> None:
    root = tmp_path / "support"
    _png(root / "cat" / "1.png", 1)
    os.symlink(root, root / "again")
    support = read_support_folder(root)
    assert support.class_names == ["cat"] and support.paths == [str(root / "cat" / "1.png")]
