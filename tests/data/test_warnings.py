"""Library warnings reach the user as the project's one-line ``warning:``, never with a source line."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from toolkit.console import route_warnings
from toolkit.data.store import decode_image, ignore_pil_bomb_warnings


def test_decompression_bomb_warning_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.png"
    Image.fromarray(np.zeros((30, 40), dtype=np.uint8)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 1200 pixels is "too many", 2000 would be an error
    with warnings.catch_warnings():
        ignore_pil_bomb_warnings()  # as on import (pytest imported the module inside its own catch_warnings)
        route_warnings()
        array = decode_image(str(path), 16, 1)
    assert array.shape == (1, 16, 16)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == [f"warning: {path}: 40x30 = 1,200 pixels is over PIL's decompression-bomb limit of 1,000; "
                     "decoding it anyway"]


def test_any_library_warning_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        route_warnings()
        warnings.warn("First sentence, with detail.\n  Second sentence. Third.", FutureWarning)
    assert capsys.readouterr().err.splitlines() == ["warning: First sentence, with detail (FutureWarning)"]
