"""Imports only go downward: data -> models/losses/metrics -> engine -> objectives/evaluate/study -> exporters
-> scoring -> cli (README, "Architecture"), and no module imports itself through others (no import cycle).

The import graph is read from the source with ``ast`` over every module of every package (subpackages
included), so imports inside functions and relative imports count too.
"""

from __future__ import annotations

import ast
from pathlib import Path

from exporters.export_folder import ExportFolder, TritonModel
from tests.helpers import REPO
from toolkit.engine.run_folder import RunFolder

LAYERS = {"toolkit.config": 0, "toolkit.errors": 0, "toolkit.console": 0, "toolkit": 0, "toolkit.data": 1,
          "toolkit.models": 2, "toolkit.losses": 2, "toolkit.metrics": 2, "toolkit.engine": 3,
          "toolkit.pretrain": 4, "toolkit.finetune": 4, "toolkit.finetune_init": 4, "toolkit.refit": 4, "toolkit.evaluate": 4, "toolkit.study": 4,
          "exporters": 5, "scoring": 6, "cli": 7, "benchmarks": 8}
PACKAGES = ("toolkit", "exporters", "scoring", "benchmarks")


def layer_of(module: str) -> int | None:
    matches = [k for k in LAYERS if module == k or module.startswith(k + ".")]
    return LAYERS[max(matches, key=len)] if matches else None


def module_files(root: Path, packages: tuple[str, ...] = PACKAGES, scripts: tuple[str, ...] = ("cli.py",)
                 ) -> dict[str, Path]:
    """Every module under ``root``'s ``packages`` (all depths) and top-level ``scripts``, by dotted name."""
    files = [p for package in packages for p in (root / package).rglob("*.py")]
    files += [root / s for s in scripts if (root / s).is_file()]
    return {".".join(p.relative_to(root).with_suffix("").parts).removesuffix(".__init__"): p for p in files}


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names, relative levels resolved against ``module``'s package."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[:len(package) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _imports(path: Path, module: str) -> list[tuple[int, str, list[str]]]:
    """``(line, module, names)`` of every import in ``path``, anywhere in it (``names`` empty for ``import M``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            found.append((node.lineno, _absolute(module, path, node), [a.name for a in node.names if a.name != "*"]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name, []) for alias in node.names]
    return found


def imported_modules(path: Path, module: str = "") -> list[tuple[int, str]]:
    """``(line, module)`` of every import in ``path``; ``from M import n`` gives ``M`` and ``M.n`` (``n`` may be a module)."""
    found = []
    for line, target, names in _imports(path, module):
        found += [(line, target)] if target else []
        found += [(line, f"{target}.{n}".lstrip(".")) for n in names]
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports.

    ``from M import n`` is an edge to ``M.n`` when that is a module, else to ``M``; any other name
    is an edge to its deepest prefix that is a project module.
    """
    def deepest(name: str) -> str | None:
        parts = name.split(".")
        return next((".".join(parts[:cut]) for cut in range(len(parts), 0, -1) if ".".join(parts[:cut]) in modules), None)

    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        edges = set()
        for _, target, names in _imports(path, module):
            submodules = [f"{target}.{n}".lstrip(".") for n in names if f"{target}.{n}".lstrip(".") in modules]
            edges.update(submodules)
            if len(submodules) < len(names) or not names:
                edges.add(deepest(target))
        edges -= {module, None}
        graph[module] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_every_package_is_scanned() -> None:
    modules = module_files(REPO)
    assert len(modules) > 100
    packages = {".".join(p.parent.relative_to(REPO).parts) for p in modules.values() if p.name == "__init__.py"}
    on_disk = {".".join(p.parent.relative_to(REPO).parts) for package in PACKAGES
               for p in (REPO / package).rglob("__init__.py")}
    assert packages == on_disk and "scoring.index" in packages
    assert [m for m in modules if layer_of(m) is None] == []


def test_imports_only_go_downward() -> None:
    upward = []
    modules = module_files(REPO)
    for module, path in modules.items():
        own = layer_of(module)
        for line, name in imported_modules(path, module):
            other = layer_of(name)
            if own is not None and other is not None and other > own:
                upward.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    assert upward == []


def test_no_import_cycles() -> None:
    assert cycles(import_graph(module_files(REPO))) == []


def test_file_names_have_one_owner() -> None:
    """A run's checkpoint names and an export's file names are literals only in ``RunFolder`` / ``ExportFolder`` /
    ``TritonModel``; everyone else asks them (README, "Architecture")."""
    owned = {RunFolder.CHECKPOINT, RunFolder.BEST, RunFolder.LAST, *TritonModel.MODEL_FILES.values(), TritonModel.CONFIG,
             *(v for k, v in vars(ExportFolder).items() if k.isupper() and isinstance(v, str))}
    assert {"checkpoint.pt", "encoder.onnx", "encoder.int8.onnx.rejected", "config.pbtxt"} <= owned
    owners = {REPO / "toolkit/engine/run_folder.py", REPO / "exporters/export_folder.py"}
    found = [f"{path.relative_to(REPO)}:{node.lineno} {node.value!r}" for path in module_files(REPO).values()
             if path not in owners for node in ast.walk(ast.parse(path.read_text()))
             if isinstance(node, ast.Constant) and node.value in owned]
    assert found == []


def test_the_checker_sees_an_upward_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from scoring.score import read_image_list\n")
    assert imported_modules(bad) == [(2, "scoring.score"), (2, "scoring.score.read_image_list")]
    assert layer_of("scoring.score") > layer_of("exporters.parity")


def test_the_checker_resolves_relative_imports(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    for name, text in {"__init__.py": "from .a import x\n", "a.py": "from . import b\nx = 1\n", "b.py": "",
                       "sub/__init__.py": "from .. import a\nfrom ..b import y\n", "sub/c.py": "from .. import sub\n"}.items():
        (tmp_path / "pkg" / name).write_text(text)
    modules = module_files(tmp_path, ("pkg",), ())
    assert set(modules) == {"pkg", "pkg.a", "pkg.b", "pkg.sub", "pkg.sub.c"}
    assert import_graph(modules) == {"pkg": {"pkg.a"}, "pkg.a": {"pkg.b"}, "pkg.b": set(),
                                     "pkg.sub": {"pkg.a", "pkg.b"}, "pkg.sub.c": {"pkg.sub"}}


def test_the_checker_sees_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("from pkg.b import g\n")
    (tmp_path / "pkg" / "b.py").write_text("def g():\n    from pkg.c import h\n")
    (tmp_path / "pkg" / "c.py").write_text("def h():\n    import pkg.a\n")
    (tmp_path / "pkg" / "d.py").write_text("import pkg.a\n")
    assert cycles(import_graph(module_files(tmp_path, ("pkg",), ()))) == [["pkg.a", "pkg.b", "pkg.c"]]
