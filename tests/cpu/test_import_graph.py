"""The project's modules import each other as a DAG: no circles, function-local imports included.

The graph is read from the source with ``ast`` (nothing is imported): every ``import`` and
``from ... import`` anywhere in a module, at module level or inside a function, of a module of
``bench`` or ``implementations``. ``from pkg import name`` counts as an import of ``pkg.name``
when that is a module, else of ``pkg``. A package's ``__init__`` is the node ``pkg``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("bench", "implementations")


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under the project's packages."""
    out: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _resolve(current: str, is_pkg: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = current.split(".") if is_pkg else current.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules that ``name`` imports anywhere in its source."""
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, is_pkg, node)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for t in targets:
            while t and t not in modules:  # `import bench.run.x` style: the longest known prefix
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = module_files(root)
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or ``None`` for a DAG (iterative DFS)."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    for start in sorted(graph):
        if state.get(start):
            continue
        stack: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        path = [start]
        state[start] = 1
        while stack:
            node, todo = stack[-1]
            if not todo:
                state[node] = 2
                stack.pop()
                path.pop()
                continue
            nxt = todo.pop()
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, sorted(graph.get(nxt, ()))))
    return None


def test_project_imports_form_a_dag():
    graph = import_graph()
    assert len(graph) > 20, "the graph reader found too few modules"
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_reader_sees_function_local_and_relative_imports():
    graph = import_graph()
    # bench.worker imports bench.agreement only inside a function
    assert "bench.agreement" in graph["bench.worker"]
    # implementations.keras imports `.model` (relative, function-local)
    assert "implementations.keras.model" in graph["implementations.keras"]


@pytest.mark.parametrize(
    "files",
    [
        {"bench/a.py": "def f():\n    from bench import b\n", "bench/b.py": "import bench.a\n"},
        {
            "bench/a.py": "from .b import x\n",
            "bench/b.py": "from .c import y\n",
            "bench/c.py": "from bench.a import z\n",
        },
    ],
    ids=["function-local", "relative-three"],
)
def test_negative_control_circle_is_found(tmp_path, files):
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    for rel, text in files.items():
        (tmp_path / rel).write_text(text)
    cycle = find_cycle(import_graph(tmp_path))
    assert cycle is not None and cycle[0] == cycle[-1]


def test_positive_control_dag_passes(tmp_path):
    for pkg in PACKAGES:
        (tmp_path / pkg).mkdir()
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "bench/a.py").write_text("from bench import b\nimport bench.c\n")
    (tmp_path / "bench/b.py").write_text("def f():\n    from .c import x\n")
    (tmp_path / "bench/c.py").write_text("import numpy\n")
    assert find_cycle(import_graph(tmp_path)) is None
