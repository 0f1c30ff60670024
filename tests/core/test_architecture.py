"""The shape of the package: no import cycle, no module past the size one reader can hold, and the
layers in order (the core imports no edge or face, the store nothing of the fleet but its model)."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from support import REPO

SRC = REPO / "src"
MAX_LINES = 650  # "about 600": a module past this is split
# the pure core: bytes and objects in, frozen results out
CORE = {
    "certfleet.names",
    "certfleet.keys",
    "certfleet.csr",
    "certfleet.chain",
    "certfleet.verify",
    "certfleet.lint",
    "certfleet.export",
    "certfleet.findings",
    "certfleet.problems",
    "certfleet.certinfo",
}
# what the core must never reach: the store, the fleet, the network and the faces
OUTER = (
    "certfleet.cli",
    "certfleet.console",
    "certfleet.store",
    "certfleet.fleet",
    "certfleet.check",
    "certfleet.probe",
    "certfleet.endpoint",
    "certfleet.watch",
    "certfleet.metrics",
)


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "certfleet").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import the module can run (at import time or in a function); imports only a type
    checker sees (``if TYPE_CHECKING:``) cannot make a cycle at run time and are left out."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _type_checking(node):
            yield from (n for child in node.orelse for n in _imports_in(child))
            continue
        yield from _imports_in(node)


def _imports_in(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
        return
    if isinstance(node, ast.If) and _type_checking(node):
        return
    for child in ast.iter_child_nodes(node):
        yield from _imports_in(child)


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                # ``from pkg import sub`` loads the submodule; ``from pkg import name`` the package
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root, edges in graph.items():
        if root in index:
            continue
        work = [(root, iter(sorted(edges)))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_the_checker_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_in_src() -> None:
    assert cycles(import_graph()) == []


@pytest.mark.parametrize("name", sorted(_modules()))
def test_no_module_is_too_long(name: str) -> None:
    lines = _modules()[name].read_text().count("\n")
    assert lines <= MAX_LINES, f"{name} has {lines} lines: split it by concept"


def test_the_core_imports_no_edge_or_face() -> None:
    graph = import_graph()
    for name in sorted(CORE & set(graph)):
        wrong = {t for t in graph[name] if t.startswith(OUTER)}
        assert not wrong, f"{name} imports {sorted(wrong)}"


def test_the_store_imports_only_the_fleet_model() -> None:
    graph = import_graph()
    for name in (n for n in graph if n.startswith("certfleet.store")):
        fleet = {t for t in graph[name] if t.startswith("certfleet.fleet")}
        assert fleet <= {"certfleet.fleet", "certfleet.fleet.model"}, f"{name} imports {sorted(fleet)}"
