"""Imports only go downward: data -> models/losses/metrics -> engine -> objectives/evaluate/study -> exporters
-> scoring -> cli (README, "Architecture"). Read from the source with ``ast``, so lazy imports count too."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO

LAYERS = {"toolkit.config": 0, "toolkit.errors": 0, "toolkit.console": 0, "toolkit": 0, "toolkit.data": 1,
          "toolkit.models": 2, "toolkit.losses": 2, "toolkit.metrics": 2, "toolkit.engine": 3,
          "toolkit.pretrain": 4, "toolkit.finetune": 4, "toolkit.finetune_init": 4, "toolkit.refit": 4, "toolkit.evaluate": 4, "toolkit.study": 4,
          "exporters": 5, "scoring": 6, "cli": 7, "benchmarks": 8}


def layer_of(module: str) -> int | None:
    matches = [k for k in LAYERS if module == k or module.startswith(k + ".")]
    return LAYERS[max(matches, key=len)] if matches else None


def imported_modules(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


def test_imports_only_go_downward() -> None:
    sources = [*REPO.glob("toolkit/**/*.py"), *REPO.glob("exporters/*.py"), *REPO.glob("scoring/*.py"), REPO / "cli.py"]
    assert len(sources) > 50
    upward = []
    for path in sources:
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        own = layer_of(module)
        for line, name in imported_modules(path):
            other = layer_of(name)
            if own is not None and other is not None and other > own:
                upward.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    assert upward == []


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from scoring.score import read_image_list\n")
    assert imported_modules(bad) == [(2, "scoring.score")]
    assert layer_of("scoring.score") > layer_of("exporters.parity")
