"""The project's modules import each other as a DAG: no circles, function-local imports included;
and the rooms import one way.

Rooms, lowest first: ``bench.core`` (what a backend needs: spec types, parameter checks, thread
settings, the model contract) < ``bench.plan`` < ``bench.check`` < ``bench.measure`` <
``bench.judge`` < ``bench.report`` < the top (``bench.run``, ``bench.gate``, the CLI). A module
imports only its own room and lower ones. ``implementations`` import only ``bench.core`` and
themselves, and no module of ``bench`` imports a backend by name (they are found through
``bench.plan.backends``, like a plugin).

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


# The rooms of ``bench`` in the order they may import each other (lowest first).
ROOMS = ("bench.core", "bench.plan", "bench.check", "bench.measure", "bench.judge", "bench.report", "bench")
CORE = "bench.core"


def room(module: str) -> str:
    """``implementations`` or the longest room of ``ROOMS`` that holds ``module``."""
    if module.split(".")[0] == "implementations":
        return "implementations"
    return max((r for r in ROOMS if module == r or module.startswith(r + ".")), key=len)


def room_violations(graph: dict[str, set[str]]) -> list[str]:
    """Every import against the one-way rule, as ``a -> b (why)``."""
    rank = {r: i for i, r in enumerate(ROOMS)}
    bad = []
    for a, targets in sorted(graph.items()):
        ra = room(a)
        for b in sorted(targets):
            rb = room(b)
            if ra == "implementations":
                if rb not in ("implementations", CORE):
                    bad.append(f"{a} -> {b} (a backend imports only {CORE} and itself)")
            elif rb == "implementations":
                bad.append(f"{a} -> {b} (the harness finds backends through bench.plan.backends)")
            elif rank[rb] > rank[ra]:
                bad.append(f"{a} -> {b} ({ra} may not import the later room {rb})")
    return bad


def room_edges(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(room(a), room(b)) for a, ts in graph.items() for b in ts if room(a) != room(b)}


def test_rooms_import_one_way():
    graph = import_graph()
    assert room_violations(graph) == []
    edges = room_edges(graph)
    assert ("implementations", CORE) in edges and ("bench.measure", "bench.check") in edges  # the reader sees them
    print("room -> rooms it imports:")
    for r in ("implementations", *ROOMS):
        print(f"  {r}: {', '.join(sorted(b for a, b in edges if a == r)) or '-'}")


def test_core_imports_nothing_else_of_the_project():
    graph = import_graph()
    core = {m: sorted(t for t in ts if room(t) != CORE) for m, ts in graph.items() if room(m) == CORE}
    assert len(core) >= 4, "the core has its modules"
    assert {m: ts for m, ts in core.items() if ts} == {}


@pytest.mark.parametrize(
    ("planted", "why"),
    [
        ("bench/core/spec.py", "may not import the later room bench.plan"),
        ("implementations/numpy/model.py", "a backend imports only bench.core"),
        ("bench/measure/timing.py", "finds backends through bench.plan.backends"),
    ],
)
def test_negative_control_planted_import_fails(tmp_path, planted, why):
    """A copy of the project with one planted import: the rule names it."""
    import shutil

    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, tmp_path / pkg, ignore=shutil.ignore_patterns("*.toml", "*.json", "*.md"))
    target = {"bench/core/spec.py": "bench.plan.presets", "implementations/numpy/model.py": "bench.plan.presets"}
    line = f"import {target.get(planted, 'implementations.numpy')}\n"
    path = tmp_path / planted
    assert room_violations(import_graph(tmp_path)) == []  # positive control: the copy is clean
    path.write_text(path.read_text(encoding="utf-8") + "\n\ndef _planted():\n    " + line, encoding="utf-8")
    bad = room_violations(import_graph(tmp_path))
    assert len(bad) == 1 and why in bad[0], bad


def test_project_imports_form_a_dag():
    graph = import_graph()
    assert len(graph) > 20, "the graph reader found too few modules"
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_reader_sees_function_local_and_relative_imports():
    graph = import_graph()
    # bench.measure.case imports bench.check.agreement only inside a function
    assert "bench.check.agreement" in graph["bench.measure.case"]
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
