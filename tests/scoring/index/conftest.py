"""Fixtures of the index tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def onnx_model(exported_run: Path) -> Path:
    """``export/encoder.onnx`` of the module's exported tiny run."""
    return exported_run / "export" / "encoder.onnx"
