"""The package's layers, read from its source with ``ast``: no import cycles (imports inside
functions count, ``if TYPE_CHECKING:`` ones do not), and ``config.runtime`` read only where
the runtime is chosen.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pixsim_host

PACKAGE = Path(pixsim_host.__file__).resolve().parent
NAME = "pixsim_host"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> Iterator[tuple[str, int]]:
    """(imported in-package module, line) for every import that runs, at any depth."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)  # only the runtime branch
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == NAME or alias.name.startswith(NAME + "."):
                    yield _existing(alias.name, known), node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target == NAME or target.startswith(NAME + "."):
                for alias in node.names:
                    # `from pixsim_host import stack` imports the module pixsim_host.stack.
                    sub = f"{target}.{alias.name}"
                    yield (sub if sub in known else _existing(target, known)), node.lineno
        stack.extend(ast.iter_child_nodes(node))


def _existing(name: str, known: set[str]) -> str:
    while name not in known and "." in name:
        name = name.rsplit(".", 1)[0]
    return name


def _graph() -> dict[str, dict[str, int]]:
    modules = _modules()
    known = set(modules)
    graph: dict[str, dict[str, int]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        edges = graph.setdefault(module, {})
        for target, line in _imports(tree, module, path.name == "__init__.py", known):
            if target != module:
                edges.setdefault(target, line)
    return graph


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_walk_sees_function_level_imports_and_skips_type_checking_ones() -> None:
    code = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pixsim_host.stack import up\n"
        "def f():\n    from pixsim_host import render\n    from . import errors\n"
    )
    known = {"pixsim_host", "pixsim_host.stack", "pixsim_host.render", "pixsim_host.errors"}
    found = {t for t, _ in _imports(ast.parse(code), "pixsim_host.doctor", False, known)}
    assert found == {"pixsim_host.render", "pixsim_host.errors"}
    assert _cycles({"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1}, "d": {"a": 1}}) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    graph = _graph()
    cycles = _cycles(graph)
    described = []
    for cycle in cycles:
        members = set(cycle)
        edges = [f"{a} -> {b} (line {graph[a][b]})" for a in cycle for b in graph[a] if b in members]
        described.append(f"{', '.join(cycle)}:\n    " + "\n    ".join(edges))
    assert not cycles, "import cycles:\n" + "\n".join(described)


# Where config.runtime may be read: the config itself, and the one runtime switch. Every
# other module asks the runtime (runtime.kind, its capabilities and words).
RUNTIME_READERS = {
    "pixsim_host.config": None,  # anywhere in the module
    "pixsim_host.stack": {"runtime_type"},  # open_runtime opens what runtime_type picks
    # Which files a host has is decided at render time, before any runtime exists (init,
    # config set, render): the renderer must not import a runtime to learn it.
    "pixsim_host.render": {"_renders_kubernetes"},
}


def _runtime_reads(tree: ast.AST) -> Iterator[tuple[str, int, str]]:
    """(enclosing function, line, expression) for every ``<name>.runtime`` attribute read whose
    object is a HostConfig by name (config, new, old, existing, ...)."""

    def walk(node: ast.AST, function: str) -> Iterator[tuple[str, int, str]]:
        for child in ast.iter_child_nodes(node):
            name = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
            if (isinstance(child, ast.Attribute) and child.attr == "runtime"
                    and isinstance(child.ctx, ast.Load)):
                yield name, child.lineno, ast.unparse(child)
            yield from walk(child, name)

    yield from walk(tree, "<module>")


# Objects with a ``runtime`` attribute that are not a host's config: the command-line
# option init and restore take (a choice not yet in any config), and the runtime package.
NOT_A_CONFIG = ("options.runtime", "args.runtime", "pixsim_host.runtime", "exc.runtime", "self.runtime",
                "failure.runtime", "error.runtime", "ctx.runtime", "result.runtime")


def test_config_runtime_is_read_only_where_the_runtime_is_chosen() -> None:
    offenders = []
    for module, path in _modules().items():
        allowed = RUNTIME_READERS.get(module, set())
        if allowed is None:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for function, line, expression in _runtime_reads(tree):
            if expression in NOT_A_CONFIG or function in allowed:
                continue
            offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line} {expression} (in {function})")
    assert not offenders, ("config.runtime read outside the runtime switch; ask the runtime "
                           "(stack.open_runtime / stack.runtime_type) instead:\n  " + "\n  ".join(offenders))
