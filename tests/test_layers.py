"""The package layers of `tfward/` (docs/architecture.md §1), checked from the source with `ast`.

Every import between our own packages is found — at module level, inside functions and under
`TYPE_CHECKING` alike — and the graph of packages must have no cycle, and every import must go
to the same floor or a lower one. A module directly under `tfward/` (errors, ids, files,
wirejson) is a node of its own.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tfward"

# The floors, lowest first. A package may import from its own floor and the ones below.
FLOORS: dict[str, int] = {
    "tfward": 0,  # tfward/__init__.py: the version
    "errors": 0,
    "ids": 0,
    "files": 0,
    "wirejson": 0,
    "config": 1,
    "runs": 1,
    "releases": 1,
    "cluster": 1,
    "obs": 1,
    "store": 2,
    "actors": 3,
    "runtasks": 3,
    "outbox": 4,
    "services": 4,
    "daemon": 5,
    "cli": 5,
}


def _node(module: str) -> str:
    """`tfward.store.runs` -> `store`; `tfward.errors` -> `errors`; `tfward` -> `tfward`."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _module_of(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    if is_package:
        parts.pop()
    return ".".join(parts), is_package


def _imports(path: Path) -> set[str]:
    module, is_package = _module_of(path)
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
                # `from . import x` names submodules: each is an import of its own.
                found.update(f"{target}.{a.name}" for a in node.names)
            else:
                found.add(node.module or "")
    return {name for name in found if name == "tfward" or name.startswith("tfward.")}


def package_graph() -> dict[str, dict[str, list[str]]]:
    """node -> imported node -> the module-level edges that make it (for the message)."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(PACKAGE.rglob("*.py")):
        module, _ = _module_of(path)
        for target in _imports(path):
            a, b = _node(module), _node(target)
            if a != b:
                graph[a][b].append(f"{module} -> {target}")
    return graph


def _cycles(graph: dict[str, dict[str, list[str]]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
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

    for v in list(graph):
        if v not in index:
            visit(v)
    return found


def test_the_packages_of_tfward_import_each_other_without_a_cycle() -> None:
    graph = package_graph()
    cycles = _cycles(graph)
    detail = [
        f"{a} -> {b}: {graph[a][b][:3]}" for c in cycles for a in c for b in c if b in graph[a]
    ]
    assert not cycles, f"import cycles between packages: {cycles}\n" + "\n".join(detail)


def test_every_package_imports_only_its_own_floor_or_lower_ones() -> None:
    graph = package_graph()
    unknown = (set(graph) | {b for a in graph for b in graph[a]}) - FLOORS.keys()
    assert not unknown, f"packages missing from FLOORS (give them a floor): {sorted(unknown)}"
    upward = [
        f"{a} (floor {FLOORS[a]}) -> {b} (floor {FLOORS[b]}): {edges[:3]}"
        for a, targets in graph.items()
        for b, edges in targets.items()
        if FLOORS[b] > FLOORS[a]
    ]
    assert not upward, "imports going up a floor:\n" + "\n".join(upward)


def test_the_store_is_the_only_package_that_builds_sql() -> None:
    # docs/architecture.md §1: the actors, services and API call named store functions.
    builders = {"select", "insert", "update", "delete", "text", "exec_driver_sql"}
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module, _ = _module_of(path)
        if _node(module) == "store":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sqlalchemy"):
                names = {a.name for a in node.names} & builders
                if names:
                    offenders.append(f"{module} imports {sorted(names)} from {node.module}")
            if isinstance(node, ast.Attribute) and node.attr == "exec_driver_sql":
                offenders.append(f"{module} calls exec_driver_sql")
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize(
    ("graph", "cycle"),
    [
        ({"a": {"b": ["x"]}, "b": {"a": ["y"]}}, [["a", "b"]]),
        ({"a": {"b": ["x"]}, "b": {"c": ["y"]}, "c": {"a": ["z"]}}, [["a", "b", "c"]]),
        ({"a": {"b": ["x"]}, "b": {"c": ["y"]}}, []),
    ],
)
def test_the_cycle_finder_finds_cycles_of_two_and_three_and_none_in_a_chain(
    graph: dict[str, dict[str, list[str]]], cycle: list[list[str]]
) -> None:
    assert _cycles(graph) == cycle
