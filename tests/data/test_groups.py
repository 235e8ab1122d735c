"""The group of a class: first path component, or a CSV manifest's group column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from toolkit.data.groups import class_groups, first_path_component
from toolkit.errors import ToolkitError


def test_first_path_component_and_rotation_classes() -> None:
    assert first_path_component("Greek/character01") == "Greek"
    assert first_path_component("Greek/character01@rot270") == "Greek"
    assert first_path_component("cat") == "cat"


def test_folder_classes_group_by_alphabet() -> None:
    ids, names = class_groups(["Latin/a", "Greek/b", "Latin/c", "Greek/b@rot90"], "some/folder")
    assert names == ["Greek", "Latin"]
    assert ids.tolist() == [1, 0, 1, 0]


def _manifest(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "m.csv"
    path.write_text("path,label,group\n" + "\n".join(rows) + "\n")
    return path


def test_csv_group_column(tmp_path: Path) -> None:
    path = _manifest(tmp_path, ["x.png,a,G1", "y.png,b,G2", "z.png,a,G1", "w.png,c,G1"])
    ids, names = class_groups(["a", "b", "c", "a@rot90"], str(path))
    assert names == ["G1", "G2"] and ids.tolist() == [0, 1, 0, 0]
    assert isinstance(ids, np.ndarray)


def test_csv_class_in_two_groups_is_an_error(tmp_path: Path) -> None:
    path = _manifest(tmp_path, ["x.png,a,G1", "y.png,a,G2"])
    with pytest.raises(ToolkitError, match=r"m.csv:3: label 'a' is in group 'G1'"):
        class_groups(["a"], str(path))
