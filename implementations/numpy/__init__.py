"""NumPy implementation: the float64 reference every other backend is checked against.

im2col + GEMM convolutions in NHWC, vectorised max-pool routing to the argmax, stable
softmax/cross-entropy. The same code runs on CuPy (see ``implementations.cupy``).
"""

from __future__ import annotations

REQUIRES: tuple[str, ...] = ()


def available() -> tuple[bool, str]:
    try:
        import numpy

        return True, f"numpy {numpy.__version__}"
    except Exception as e:  # pragma: no cover - numpy is a core dependency
        return False, f"import numpy failed: {type(e).__name__}: {e}"


def build(spec, params, dtype: str = "float32", seed: int = 0):
    from .model import XpModel

    return XpModel(spec, params, dtype, seed=seed)


def reference(spec, params, dtype: str = "float64"):
    """The reference every implementation is compared with: this model at one thread, so the
    batch is never split into shards (its sums run in one order at any thread count)."""
    from .model import XpModel

    return XpModel(spec, params, dtype, threads=1)


def settings() -> dict:
    import numpy

    from bench.core.threads import blas_info, configured_threads
    from implementations.shards import shards_setting

    from .model import SHARD_MIN_FLOPS

    return {
        "library": f"numpy {numpy.__version__}",
        "device": "cpu",
        "layout": "NHWC internal",
        "shards": shards_setting(configured_threads(), SHARD_MIN_FLOPS),
        **blas_info(),
    }
