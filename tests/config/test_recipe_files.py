"""A recipe file that is not TOML text (binary, Latin-1, unreadable): one line naming it, exit 2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.test_cli import invoke
from toolkit.config import load_recipe
from toolkit.errors import ToolkitError


def test_a_binary_recipe_is_one_line_naming_the_file(tmp_path: Path) -> None:
    recipe = tmp_path / "model.toml"
    recipe.write_bytes(bytes(range(256)) * 4)  # byte 128 is the first that is not UTF-8
    with pytest.raises(ToolkitError, match=rf"^{recipe}: not a TOML text file \(byte 128 is not UTF-8\)"):
        load_recipe(str(recipe))
    result = invoke("pretrain", str(recipe), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "UnicodeDecodeError" not in result.output
    assert not (tmp_path / "run").exists()


def test_a_utf8_recipe_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    recipe = tmp_path / "bom.toml"
    recipe.write_bytes("\ufeff[train]\nepochs = 3\n".encode())
    assert load_recipe(str(recipe)).train.epochs == 3


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_recipe_is_one_line(tmp_path: Path) -> None:
    recipe = tmp_path / "secret.toml"
    recipe.write_text("[train]\nepochs = 3\n")
    recipe.chmod(0)
    with pytest.raises(ToolkitError, match="cannot read the recipe"):
        load_recipe(str(recipe))
