"""``draw_images``: the one data call that gives int8 calibration its images (two disjoint random parts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_image
from toolkit.data.image_files import draw_images


def _folder(tmp_path: Path, count: int, broken: int = 0) -> Path:
    """``count`` 8x8 grey images, image i filled with the value 10 * i (so a loaded image names itself), and
    ``broken`` files with an image suffix that cannot be decoded."""
    root = tmp_path / "images"
    for i in range(count):
        write_image(root / f"{i:02d}.png", np.full((8, 8), 10 * i, dtype=np.uint8))
    for i in range(broken):
        (root / f"broken{i}.png").write_bytes(b"not a png")
    return root


def _ids(images: list[np.ndarray]) -> list[int]:
    assert all(image.shape == (1, 8, 8) and (image == image.flat[0]).all() for image in images)
    return [int(image.flat[0]) // 10 for image in images]


def test_two_disjoint_parts_of_the_asked_sizes_drawn_at_random_and_seeded(tmp_path: Path) -> None:
    root = _folder(tmp_path, 20)
    drawn = draw_images(root, 8, 5, 8, 8, 1)
    first, second = _ids(drawn.first), _ids(drawn.second)
    assert (len(first), len(second), drawn.first_picked) == (8, 5, 8)
    assert not set(first) & set(second) and set(first) | set(second) <= set(range(20))
    again = draw_images(root, 8, 5, 8, 8, 1)
    assert (_ids(again.first), _ids(again.second)) == (first, second)  # same seed, same draw
    others = [_ids(draw_images(root, 8, 5, 8, 8, 1, seed=s).first) for s in (1, 2, 3)]
    assert any(o != first for o in others)  # another seed, another draw
    assert sorted(first) != list(range(8))  # not simply the first files of the list


@pytest.mark.parametrize(("count", "first", "second"), [(10, 8, 2), (4, 3, 1), (1, 1, 0)])
def test_a_short_list_is_split_three_to_one(tmp_path: Path, count: int, first: int, second: int) -> None:
    drawn = draw_images(_folder(tmp_path, count), 8, 4, 8, 8, 1)  # 8 + 4 asked, fewer there: a quarter checks
    assert (len(drawn.first), len(drawn.second), drawn.first_picked) == (first, second, first)
    assert sorted(_ids(drawn.first) + _ids(drawn.second)) == list(range(count))


def test_unreadable_files_are_left_out_but_counted_as_picked(tmp_path: Path) -> None:
    drawn = draw_images(_folder(tmp_path, 8, broken=4), 100, 100, 8, 8, 1)  # 12 files: 9 picked, 3 held out
    assert drawn.first_picked == 9
    assert sorted(_ids(drawn.first) + _ids(drawn.second)) == list(range(8))
