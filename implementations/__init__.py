"""The registry of implementations.

``names()`` lists them, ``get(name)`` imports one (an unknown name raises ``KeyError``
listing the valid ones), ``available()`` says which can run here and why not, without
crashing when a library or device is missing. Adding a backend is one line in
``_REGISTRY`` plus its subpackage (see README, "Adding an implementation").
"""

from __future__ import annotations

import importlib
from types import ModuleType

# name -> module. Order is the report order: slowest baseline first.
_REGISTRY: dict[str, str] = {
    "pure_python": "implementations.pure_python",
    "numpy": "implementations.numpy",
    "numba": "implementations.numba",
    "cupy": "implementations.cupy",
    "keras": "implementations.keras",
    "jax": "implementations.jax",
    "torch": "implementations.torch",
    "torch-compile": "implementations.torch.compiled",
    "torch-cuda": "implementations.torch.cuda",
}


def names() -> list[str]:
    return list(_REGISTRY)


def get(name: str) -> ModuleType:
    """The backend module for ``name`` (importing it does not import its framework)."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown implementation {name!r}; valid names: {', '.join(_REGISTRY)}")
    return importlib.import_module(_REGISTRY[name])


def available() -> dict[str, tuple[bool, str]]:
    """``{name: (ok, reason)}`` for every registered backend; never raises."""
    out: dict[str, tuple[bool, str]] = {}
    for name in _REGISTRY:
        try:
            ok, reason = get(name).available()
        except Exception as e:  # a backend whose own check breaks is unavailable, with why
            ok, reason = False, f"availability check failed: {type(e).__name__}: {e}"
        out[name] = (bool(ok), str(reason))
    return out
