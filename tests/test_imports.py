"""jaxqueue's modules import one another without a circle, counting imports made inside
functions too (a late import can hide a circle without removing it)."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "jaxqueue"


def module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def import_graph(names: dict[str, Path]) -> dict[str, set[str]]:
    """Module -> the jaxqueue modules it imports (anywhere in its file). ``from . import x``
    names the submodule x; a parent package's own ``__init__`` is not an edge, as Python has
    already started it when a submodule runs."""
    graph = {name: set() for name in names}
    for name, path in names.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in names}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                subs = {f"{source}.{a.name}" for a in node.names} & set(names)
                graph[name] |= subs
                if node.module and source in names and len(subs) < len(node.names):
                    graph[name].add(source)
        graph[name].discard(name)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    state, found = {}, []

    def visit(u, stack):
        state[u] = "open"
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == "open":
                found.append(stack[stack.index(v):] + [v])
            elif v not in state:
                visit(v, stack)
        stack.pop()
        state[u] = "done"

    for u in sorted(graph):
        if u not in state:
            visit(u, [])
    return found


def test_the_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle():
    names = module_names()
    graph = import_graph(names)
    assert len(names) > 30 and sum(map(len, graph.values())) > 100  # the graph was read
    assert "jaxqueue.estimators" in graph["jaxqueue.tune"]
    assert circles(graph) == []
