"""The layers of pipeline/ as the README states them, checked over every import (function-local ones too):
nothing imports a higher layer, packages of one layer do not import each other, stage modules share code
only through pipeline/stages/__init__.py or lower layers, and no modules import each other in a circle."""
from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers import REPO

# bottom first; a module may import its own package and the packages of lower layers
LAYERS = [
    ("pipeline.errors", "pipeline.layout"),
    ("pipeline.core", "pipeline.text"),
    ("pipeline.params",),
    ("pipeline.model", "pipeline.corpora"),
    ("pipeline.predict",),
    ("pipeline.reporting",),
    ("pipeline.stages",),
    ("pipeline.graph",),
    ("pipeline",),                  # the public API (pipeline/__init__.py)
    ("pipeline.apps",),
    ("pipeline.__main__",),
]
RANK = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted((REPO / "pipeline").rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    """module -> the pipeline modules it imports anywhere in its file (`from pipeline.x import y` is an import of
    pipeline.x.y when that is a module, else of pipeline.x)."""
    known = modules()
    graph = {}
    for name, path in known.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets |= {alias.name for alias in node.names if alias.name.split(".")[0] == "pipeline"}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:                  # relative: from .x import y
                    base = ".".join([*package.split(".")[:len(package.split(".")) - node.level + 1], base]).strip(".")
                if base.split(".")[0] != "pipeline":
                    continue
                for alias in node.names:
                    targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base)
        graph[name] = targets - {name}
    return graph


def package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def test_every_package_has_a_layer():
    assert {package_of(m) for m in modules()} <= set(RANK)


def layer_violations() -> list[str]:
    wrong = []
    for module, targets in import_graph().items():
        for target in targets:
            a, b = package_of(module), package_of(target)
            if a != b and RANK[b] >= RANK[a]:
                wrong.append(f"{module} imports {target} ({b} is {'above' if RANK[b] > RANK[a] else 'beside'} {a})")
            elif module.startswith("pipeline.stages.") and target.startswith("pipeline.stages."):
                wrong.append(f"{module} imports {target} (stage modules share code through pipeline.stages)")
    return sorted(wrong)


def circles() -> list[str]:
    graph = import_graph()
    found, state = [], {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                found.append(" -> ".join([*path[path.index(target):], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_imports_go_down_the_layers():
    assert layer_violations() == []


def test_no_import_circles():
    assert circles() == []


def test_the_checks_see_a_wrong_import(tmp_path, monkeypatch):
    """They read the code: an upward import added to a copy of the package is found, and the circle it makes."""
    for path in (REPO / "pipeline").rglob("*.py"):
        target = tmp_path / path.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
    errors = tmp_path / "pipeline" / "errors.py"
    errors.write_text(errors.read_text(encoding="utf-8") + "\n\ndef _x():\n    from pipeline.graph import REGISTRY\n",
                      encoding="utf-8")
    monkeypatch.setitem(globals(), "REPO", tmp_path)
    assert "pipeline.errors imports pipeline.graph (pipeline.graph is above pipeline.errors)" in layer_violations()
    assert any(c.startswith("pipeline.errors -> pipeline.graph") or "pipeline.errors -> pipeline.graph" in c
               for c in circles())


def test_no_module_is_over_450_lines():
    long = {str(path.relative_to(REPO)): n for path in modules().values()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > 450}
    assert long == {}
