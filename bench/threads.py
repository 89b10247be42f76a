"""One thread count for every backend.

``apply_threads(n)`` sets the environment variables every library reads at import
(OpenMP, OpenBLAS, MKL, Numba, TensorFlow) and, where threadpoolctl is installed, limits
the BLAS pools already loaded. Backends read ``configured_threads()`` to set their own
runtime knobs (``torch.set_num_threads``, TF intra/inter-op, ``numba.set_num_threads``).
"""

from __future__ import annotations

import os

THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
)
NNBENCH_THREADS = "NNBENCH_THREADS"


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def configured_threads() -> int:
    """The harness's thread count: ``NNBENCH_THREADS``, else every core this process may use."""
    value = os.environ.get(NNBENCH_THREADS)
    return int(value) if value else default_threads()


def apply_threads(n: int | None = None) -> int:
    n = n or configured_threads()
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    os.environ[NNBENCH_THREADS] = str(n)
    for var in THREAD_VARS:
        os.environ[var] = str(n)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(n)
    except ImportError:
        pass
    return n


def blas_info() -> dict:
    """BLAS library and thread count as NumPy sees them (threadpoolctl when present)."""
    info: dict = {"threads": configured_threads()}
    try:
        from threadpoolctl import threadpool_info

        pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
        if pools:
            info["blas"] = f"{pools[0].get('internal_api')} {pools[0].get('version')}"
            info["blas_threads"] = pools[0].get("num_threads")
    except ImportError:
        info["blas"] = "unknown (threadpoolctl not installed)"
    return info
