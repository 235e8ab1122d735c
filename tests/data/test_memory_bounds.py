"""Image sides have an upper bound, and the decoded cache is checked against the memory available."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import toolkit.data.memory as memory
from tests.test_cli import invoke
from toolkit.config import load_recipe
from toolkit.data.image_set import ImageSet
from toolkit.data.store import build_store
from toolkit.errors import ToolkitError


@pytest.mark.parametrize("key", ["data.image_size", "data.load_size"])
def test_an_image_side_of_100000_is_refused_naming_the_key(key: str) -> None:
    with pytest.raises(ToolkitError, match=rf"'{key}' is 100000; valid: .*<= 4096"):
        load_recipe(None, sets=[f"{key}=100000"])
    assert load_recipe(None, sets=["data.image_size=4096", "data.load_size=4096"]).data.image_size == 4096


def test_the_cli_says_it_in_one_line_before_reading_data(tmp_path: Path) -> None:
    result = invoke("pretrain", "--out", str(tmp_path / "run"), "--set", "data.image_size=100000")
    assert result.exit_code == 2
    assert "data.image_size" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def _files(folder: Path, n: int) -> ImageSet:
    paths = []
    for i in range(n):
        path = folder / f"{i}.png"
        Image.fromarray(np.full((20, 30, 3), i, dtype=np.uint8)).save(path)
        paths.append(str(path))
    return ImageSet(paths, np.zeros(n, dtype=np.int64), ["a"])


def test_a_cache_larger_than_available_memory_is_one_line_before_decoding(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    images = _files(tmp_path, 3)
    need = 2 * 3 * 3 * 16 * 16  # decoded images and their stacked copy, by hand
    monkeypatch.setattr(memory, "available_bytes", lambda: need - 1)
    with pytest.raises(ToolkitError, match=r"cache needs about .*\(3 images x 3 x 16 x 16.*lower data.cache_gb"):
        build_store(images, 16, 3)
    monkeypatch.setattr(memory, "available_bytes", lambda: need)
    store = build_store(images, 16, 3)
    assert tuple(store.images.shape) == (3, 3, 16, 16)


def test_available_memory_is_read_on_linux() -> None:
    free = memory.available_bytes()
    if Path("/proc/meminfo").exists():
        want = next(int(line.split()[1]) * 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                    if line.startswith("MemAvailable:"))
        assert free is not None and abs(free - want) < 2**30
