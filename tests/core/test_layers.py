"""trackware's modules import downwards only, and never in a circle.

The layers, lowest first (docs/architecture.md draws them):

0. foundation: ``exceptions``, ``signals`` and every private module not named
   below (the event, logging, environment, redaction, auth, lifecycle, and
   ``_retry``: the RetryPolicy value that exporters accept and the circuit
   breaker, which import nothing of ours)
1. exporters: ``trackware.exporters.*`` (with the HTTP retry vocabulary)
2. delivery: the queues (memory, the SQLite spool, Redis Streams and their
   consumer side), the dead letter and its replay, the worker and its accounting
3. front: the tracker, ``track()``'s preparation, the process default, the
   scope, the page view, the decorators, the inspector's client and the
   package itself
4. top: ``trackware.integrations.*``, ``trackware.testing.*``, the CLI, and
   the public add-on modules (``inspector``, ``metrics``, ``worker``,
   ``deadletter``)

A module may import from its own layer and the layers below it, including
under ``if TYPE_CHECKING:`` (a typing-only import upwards is still a
dependency a reader must follow; a Protocol in the lower layer replaces it).
Circles are looked for among the imports that run (module-level and
function-level; typing-only imports cannot form a circle at run time).
"""

from __future__ import annotations

import ast
import pathlib

import trackware

ROOT = pathlib.Path(trackware.__file__).parent

DELIVERY = {
    "_queue",
    "_deadletter",
    "_worker",
    "_settle",
    "_spool",
    "_streams",
    "_stream_consumer",
    "_replay",
}
FRONT = {
    "",  # the package itself
    "_tracker",
    "_prepare",
    "_default",
    "_intake",
    "_context",
    "_page",
    "_decorators",
    "_config",
    "_inspect",
    "_backends",
}
TOP_MODULES = {
    "_cli",
    "__main__",
    "_loader",
    "inspector",
    "metrics",
    "worker",
    "deadletter",
}
NAMES = ["foundation", "exporters", "delivery", "front", "top"]


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> int:
    parts = module.split(".")
    assert parts[0] == "trackware", module
    rest = parts[1:]
    if not rest:
        return 3
    if rest[0] in ("integrations", "testing") or rest[0] in TOP_MODULES:
        return 4
    if rest[0] == "exporters":
        return 1
    if rest[0] in DELIVERY:
        return 2
    if rest[0] in FRONT:
        return 3
    return 0


MODULES = {module_name(p): p for p in ROOT.rglob("*.py")}


def _resolve(importer: str, is_package: bool, node: ast.ImportFrom) -> list[str]:
    if node.level:
        base = importer.split(".")
        if not is_package:
            base = base[:-1]
        if node.level > 1:
            base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    if not prefix.startswith("trackware"):
        return []
    targets = []
    for alias in node.names:
        candidate = f"{prefix}.{alias.name}"
        targets.append(candidate if candidate in MODULES else prefix)
    return targets


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports() -> list[tuple[str, str, bool]]:
    """Every (importer, imported, typing_only) edge inside trackware."""
    edges: list[tuple[str, str, bool]] = []
    for name, path in MODULES.items():
        is_package = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"))

        def visit(
            node: ast.AST,
            typing_only: bool,
            name: str = name,
            is_package: bool = is_package,
        ) -> None:
            if isinstance(node, ast.If) and _is_type_checking(node.test):
                for child in node.body:
                    visit(child, True)
                for child in node.orelse:
                    visit(child, typing_only)
                return
            if isinstance(node, ast.ImportFrom):
                for target in _resolve(name, is_package, node):
                    edges.append((name, target, typing_only))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("trackware"):
                        edges.append((name, alias.name, typing_only))
            for child in ast.iter_child_nodes(node):
                visit(child, typing_only)

        visit(tree, False)
    return edges


def test_the_walk_sees_the_package() -> None:
    edges = imports()
    assert len(MODULES) > 30
    assert ("trackware._tracker", "trackware._event", False) in {
        (a, b, t) for a, b, t in edges
    }


def test_no_import_runs_upwards() -> None:
    upward = sorted(
        f"{a} ({NAMES[layer(a)]}) imports {b} ({NAMES[layer(b)]})"
        + (" under TYPE_CHECKING" if typing_only else "")
        for a, b, typing_only in imports()
        if layer(b) > layer(a)
    )
    assert upward == []


def test_no_import_circle() -> None:
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for a, b, typing_only in imports():
        if not typing_only and a != b and not a.startswith(b + "."):
            # A module importing its own package is Python's normal parent
            # import, not a circle of ours.
            graph[a].add(b)
    circles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                circles.append(stack[stack.index(nxt) :] + [nxt])
            elif nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)
    assert circles == []


def test_the_layer_rules_catch_what_they_should() -> None:
    # The classifier itself: what the issue forbids lands in the wrong order.
    assert layer("trackware.exporters.mxo") < layer("trackware._worker")
    assert layer("trackware._tracker") < layer("trackware.integrations.flask")
    assert layer("trackware._tracker") < layer("trackware.testing.emulators")
    assert layer("trackware._event") < layer("trackware.exporters._http")
