"""The house rules, read from the source: imports run one way between minigemma's folders
(cli -> model -> generate -> verify -> unified -> audio -> vision -> text -> weights; kernels -> text;
the audio tower reuses the vision tower's clipped linears), and the
runtime package never imports `weights_tools` (tools for making weights, which need torch)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "minigemma"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Absolute names of everything `path` imports (at any depth: lazy imports count too)."""
    me = module_name(path)
    package = me.split(".") if path.name == "__init__.py" else me.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module
            found.add(module)
            # `from pkg import sub` may name a submodule
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def node_of(module: str, known: set[str]) -> str | None:
    """The graph node of a minigemma module: its folder (`minigemma.text`), or the module itself for
    the files at the top (`minigemma.model`, `minigemma.errors`); None outside minigemma and for
    names that are not modules (`from .x import some_function`)."""
    if module not in known:
        return None
    parts = module.split(".")
    if len(parts) == 1:
        return None  # the package's own __init__: re-exports, not a layer
    if (PACKAGE / parts[1]).is_dir():
        return ".".join(parts[:2])
    return module


def package_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    files = sorted(package.rglob("*.py"))
    known = {module_name(f) for f in files}
    graph: dict[str, set[str]] = {}
    for f in files:
        src = node_of(module_name(f), known)
        if src is None:
            continue
        for target in imported_modules(f):
            dst = node_of(target, known)
            if dst is not None and dst != src:
                graph.setdefault(src, set()).add(dst)
        graph.setdefault(src, set())
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_circle_between_folders():
    graph = package_graph()
    cycle = find_cycle(graph)
    assert cycle is None, "import circle between minigemma's folders: " + " -> ".join(cycle)


def test_no_import_circle_between_modules_inside_a_folder():
    """Inside a folder too, modules import one way (lazy imports included)."""
    files = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(f) for f in files}
    graph = {
        module_name(f): {m for m in imported_modules(f) if m in known and m != module_name(f) and m != "minigemma"}
        for f in files
    }
    # a package's __init__ re-exporting its modules is not a circle: drop edges into __init__s
    packages = {module_name(f) for f in files if f.name == "__init__.py"}
    graph = {k: {m for m in v if m not in packages} for k, v in graph.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import circle between modules: " + " -> ".join(cycle)


def test_the_arrows_point_down():
    """The layers in order: nothing imports a layer above it."""
    order = ["minigemma.cli", "minigemma.loading", "minigemma.model", "minigemma.generate", "minigemma.assistant", "minigemma.verify",
             "minigemma.unified", "minigemma.audio",
             "minigemma.vision", "minigemma.kernels", "minigemma.text", "minigemma.weights", "minigemma.errors"]
    graph = package_graph()
    for src, targets in graph.items():
        if src not in order:
            continue
        for dst in targets:
            if dst in order:
                assert order.index(dst) > order.index(src), f"{src} imports {dst}, a layer above it"


def test_runtime_package_never_imports_weights_tools():
    offenders = [
        f"{f.relative_to(ROOT)} imports {m}"
        for f in sorted(PACKAGE.rglob("*.py"))
        for m in imported_modules(f)
        if m == "weights_tools" or m.startswith("weights_tools.")
    ]
    assert not offenders, offenders


def test_weights_tools_has_no_import_circle():
    files = sorted((ROOT / "weights_tools").glob("*.py"))
    known = {module_name(f) for f in files}
    graph = {module_name(f): {m for m in imported_modules(f) if m in known and m != module_name(f)} for f in files}
    graph = {k: v - {"weights_tools"} for k, v in graph.items()}
    cycle = find_cycle(graph)
    assert cycle is None, "import circle in weights_tools: " + " -> ".join(cycle)


@pytest.mark.parametrize("cycle_graph, expected", [
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, True),
    ({"a": {"b"}, "b": {"c"}, "c": set()}, False),
])
def test_the_cycle_finder_finds_cycles(cycle_graph, expected):
    """The checker itself can fail: a planted circle is found, a chain is not."""
    assert (find_cycle(cycle_graph) is not None) == expected
