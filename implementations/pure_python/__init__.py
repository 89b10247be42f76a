"""Pure-Python implementation: the slowest baseline, standard library only.

Forward, backward and the SGD update use lists, ``math``, ``operator``, ``itertools`` and
``random`` only; NumPy appears only at the boundary (``build`` and ``to_device`` turn
arrays into lists, ``forward``/``params``/``loss_and_grads`` hand NumPy arrays back).
Python floats are IEEE double, so it always computes in float64, whatever ``dtype`` is
asked for (``settings()["compute_dtype"]``).
"""

from __future__ import annotations

REQUIRES: tuple[str, ...] = ()
COMPUTE_DTYPE = "float64"


def available() -> tuple[bool, str]:
    import sys

    return True, f"CPython {sys.version.split()[0]}, standard library only; computes in float64 for any dtype"


def build(spec, params, dtype: str = "float32", seed: int = 0):
    from .model import PurePythonModel

    return PurePythonModel(spec, params, dtype, seed=seed)


def settings() -> dict:
    import platform

    return {
        "library": f"{platform.python_implementation()} {platform.python_version()} (standard library)",
        "device": "cpu",
        "threads": 1,
        "compute_dtype": COMPUTE_DTYPE,
        "layout": "per-sample flat lists, HWC images; weights kept in both (in, out) and (out, in) row lists",
    }


def dot_rate_baseline(seconds: float = 1.0, length: int = 800, rows: int = 800) -> float:
    """Multiply-adds per second of the plain ``sum(map(mul, w, x))`` dot product over the
    rows of a ``rows x length`` list-of-lists matrix (the MLP's 800-wide layers): the
    ceiling the pure-Python train step is compared with."""
    from .ops import dot_rate

    return dot_rate(seconds, length, rows)
