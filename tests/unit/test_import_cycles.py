"""No import cycles among txxmppnode's modules.

The graph is read from the source with :mod:`ast`, not by importing: every ``import`` and
``from ... import`` naming a txxmppnode module is an edge, at module level or inside a
function (a function-level import only hides a cycle until the function runs).  Imports under
``if TYPE_CHECKING:`` are left out: they never run.  A cycle is a strongly connected component
of more than one module (or a module importing itself).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

import txxmppnode

PACKAGE = "txxmppnode"
ROOT = Path(txxmppnode.__file__).parent


def _modules() -> dict[str, Path]:
    modules: dict[str, Path] = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, skipping the bodies of ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from _imports_in(child)
            continue
        yield from _imports_in(node)


def _imports_in(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, ast.Import | ast.ImportFrom):
        yield node
    else:
        yield from _imports(node)


def _targets(
    module: str, is_package: bool, node: ast.Import | ast.ImportFrom, modules: Mapping[str, Path]
) -> set[str]:
    """The txxmppnode modules *node*, in *module*, imports.

    ``from package import name`` imports the submodule when *name* is one, and the package
    itself otherwise.  The parent packages Python imports on the way are not edges: a
    package's ``__init__`` is always being imported before any module in it.
    """
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    if node.level:
        base = module.split(".")
        if not is_package:
            base.pop()
        base = base[: len(base) - (node.level - 1)]
        origin = ".".join(base + ([node.module] if node.module else []))
    else:
        origin = node.module or ""
    targets: set[str] = set()
    for alias in node.names:
        submodule = f"{origin}.{alias.name}"
        targets.add(submodule if submodule in modules else origin)
    return targets


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in _imports(tree):
            edges |= {t for t in _targets(module, is_package, node, modules) if t in modules}
        graph[module] = edges
    return graph


def cycles(graph: Mapping[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components that are cycles (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph.get(node, ())):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component: set[str] = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph.get(node, ()):
                found.append(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_graph_sees_module_and_function_level_imports() -> None:
    graph = import_graph()
    assert "txxmppnode.sm" in graph["txxmppnode.stanzastream"]  # module level, relative
    assert "txxmppnode.security_layer" in graph["txxmppnode.asyncio_compat.connect"]  # "..x"
    # TYPE_CHECKING imports are not edges: use_connected names StanzaStream only for mypy
    assert "txxmppnode.stanzastream" not in graph["txxmppnode.use_connected"]


def test_cycles_are_found_through_function_level_imports() -> None:
    source = "def late():\n    from .b import thing\n"
    tree = ast.parse(source)
    (node,) = list(_imports(tree))
    modules = {"txxmppnode.a": Path("a.py"), "txxmppnode.b": Path("b.py")}
    assert _targets("txxmppnode.a", False, node, modules) == {"txxmppnode.b"}
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}}
    assert sorted(map(sorted, cycles(graph))) == [["a", "b", "c"], ["d"]]


def test_no_import_cycle() -> None:
    found = cycles(import_graph())
    assert found == [], "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in found)
