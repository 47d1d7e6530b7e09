"""The layout's rules, read from the imports with ``ast``: imports only point down, and no import circles.

Layers (README "Layout"): the shared vocabulary at the package root (``config`` included) → ``model`` →
``codec`` → ``bundle`` → ``data`` / ``inference`` → ``train`` / ``prepare`` → ``evaluation`` → ``serve`` →
``jobs``. Every import counts, also one inside a function: a deferred import still makes the lower layer
depend on the higher.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from helpers import ROOT

PACKAGE = "freezeempath"
# What each layer may import besides itself; anything else is an import running back up.
ALLOWED: dict[str, set[str]] = {
    "root": set(),
    "model": {"root"},
    "codec": {"root", "model"},
    "bundle": {"root", "model", "codec"},
    "data": {"root", "model"},
    "inference": {"root", "model", "codec", "bundle"},
    "train": {"root", "model", "codec", "bundle", "data"},
    "prepare": {"root", "model", "codec", "bundle", "data", "inference"},
    "evaluation": {"root", "model", "codec", "bundle", "data", "inference", "prepare"},
    "serve": {"root", "model", "codec", "bundle", "data", "inference", "evaluation"},
    "jobs": {"root", "model", "codec", "bundle", "data", "inference", "train", "prepare", "evaluation", "serve"},
}


def module_files() -> dict[str, Path]:
    """Dotted module name → file, for the library, the Serve app and the jobs."""
    files = {}
    for top, base in ((PACKAGE, ROOT / "platform"), ("serve", ROOT), ("jobs", ROOT)):
        for path in sorted((base / top).rglob("*.py")):
            parts = path.relative_to(base).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def imported(name: str, path: Path, known: set[str]) -> dict[str, int]:
    """Modules of ``known`` that ``path`` imports (``from m import x`` counts ``m.x`` when it is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.setdefault(target, node.lineno)
    return found


def layer(module: str) -> str:
    """``freezeempath.model.build`` → ``model``; ``freezeempath.labels`` → ``root``; ``serve.app`` → ``serve``."""
    parts = module.split(".")
    if parts[0] != PACKAGE:
        return parts[0]
    if len(parts) == 1:
        return "root"
    return parts[1] if parts[1] in ALLOWED else "root"  # the root modules and ``config``: shared vocabulary


GRAPH = {name: imported(name, path, set(module_files())) for name, path in module_files().items()}


def test_the_graph_sees_the_tree():
    assert {"freezeempath.model.build", "freezeempath.config.load", "serve.app", "jobs.train"} <= set(GRAPH)
    assert "freezeempath.model.spoken_chat" in GRAPH["freezeempath.model.build"]
    assert {layer(m) for m in GRAPH} == set(ALLOWED), "a folder of the package is missing from ALLOWED"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_only_point_down(module: str):
    path, here = module_files()[module], layer(module)
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {target} ({layer(target)} is above {here})"
        for target, line in sorted(GRAPH[module].items())
        if layer(target) != here and layer(target) not in ALLOWED[here]
    ]
    assert not wrong, "\n".join(wrong)


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circles():
    # A package ``__init__`` that re-exports its submodules is not a circle: the submodules import each
    # other, not the package.
    assert cycles(GRAPH) == []


def test_the_checks_catch_what_they_look_for():
    assert cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]
    assert "train" not in ALLOWED["model"] and "serve" not in ALLOWED["evaluation"]
    assert layer("freezeempath.chat_template") == "root" and layer("freezeempath.codec.vq") == "codec"
