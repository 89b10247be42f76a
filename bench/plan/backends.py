"""The backends: every entry point of the group ``nnbench.implementations`` (name = backend, value
= an importable module with the backend contract, ``bench.core.model``).

The built-in backends are registered in the project's own ``pyproject.toml``, in that same group,
so a backend shipped as another package is found exactly like ours: install it and it is listed
by ``python -m bench specs``, measured by ``run``, checked by ``agree`` and the conformance suite.
When the harness runs from a source tree (a checkout, installed or not: a GPU machine with the
code copied over), the built-ins are read from that tree's ``pyproject.toml``, so a checkout
never reports another tree's backends; an installed wheel reads its own entry points.

``names()`` lists them in report order (the built-ins' order, then other plugins by name),
``get(name)`` imports one (an unknown name raises ``KeyError`` listing the valid ones; a module
that fails to import raises its own error), ``available()`` says which can run here and why not:
a plugin whose import or ``available()`` raises is unavailable with the exception text, never a
crash. Two distributions that claim one name with different modules are a ``RegistryError``
naming both.
"""

from __future__ import annotations

import importlib
import tomllib
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from types import ModuleType

GROUP = "nnbench.implementations"
PROJECT = "nnbench"
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"

# Backends added at run time (tests, ``run.json``'s registry in a worker): name -> module.
_extra: dict[str, str] = {}


class RegistryError(RuntimeError):
    """Two plugins claim one backend name (exit 2 where a command meets it)."""


@dataclass(frozen=True)
class Entry:
    name: str
    module: str
    dist: str  # the distribution that registered it


def _source_tree() -> list[Entry]:
    """The built-ins of the source tree this harness runs from (its ``pyproject.toml``)."""
    try:
        data = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return []
    group = data.get("project", {}).get("entry-points", {}).get(GROUP, {})
    return [Entry(str(k), str(v).split(":")[0].strip(), f"{PROJECT} (source tree)") for k, v in group.items()]


def _installed() -> list[Entry]:
    out = []
    for ep in metadata.entry_points(group=GROUP):
        dist = getattr(ep, "dist", None)
        name = f"{dist.metadata['Name']} {dist.version}" if dist is not None else "an unknown distribution"
        out.append(Entry(ep.name, ep.value.split(":")[0].strip(), name))
    return out


@cache
def entries() -> dict[str, Entry]:
    """``{name: Entry}``: the source tree's built-ins first (their order is the report order), then
    installed plugins by name; the same module under one name from two places is one entry."""
    found: dict[str, Entry] = {}
    src, installed = _source_tree(), _installed()
    if src:  # this tree's own pyproject.toml names the built-ins, not an install of another tree
        installed = [e for e in installed if not e.dist.startswith(f"{PROJECT} ")]
    for e in src + sorted(installed, key=lambda e: e.name):
        have = found.get(e.name)
        if have is None:
            found[e.name] = e
        elif have.module != e.module:
            raise RegistryError(
                f"backend {e.name!r} is claimed twice: by {have.dist} ({have.module}) and by {e.dist} ({e.module}); "
                "uninstall one of them"
            )
    return found


def registry() -> dict[str, str]:
    """``{name: module}`` of every backend (what a run records in ``run.json``)."""
    return {n: e.module for n, e in entries().items()} | _extra


def names() -> list[str]:
    return list(registry())


def register(name: str, module: str) -> None:
    """Add (or replace) a backend for this process: tests, and a worker given its run's registry."""
    _extra[name] = module


def unregister(name: str) -> None:
    _extra.pop(name, None)


def get(name: str) -> ModuleType:
    """The backend module for ``name`` (importing it does not import its framework)."""
    reg = registry()
    if name not in reg:
        raise KeyError(f"unknown implementation {name!r}; valid names: {', '.join(reg)}")
    return importlib.import_module(reg[name])


def available() -> dict[str, tuple[bool, str]]:
    """``{name: (ok, reason)}`` for every backend; never raises."""
    out: dict[str, tuple[bool, str]] = {}
    for name in names():
        try:
            ok, reason = get(name).available()
        except Exception as e:  # a backend whose import or own check breaks is unavailable, with why
            ok, reason = False, f"availability check failed: {type(e).__name__}: {e}"
        out[name] = (bool(ok), str(reason))
    return out
