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

# glibc's malloc serves a block above its mmap threshold (128 KiB at start) with a fresh mmap and
# gives it back on free, so a step's large temporaries (a (50, 800) float32 activation is 160 KiB)
# page-fault in again on every call, and the top of the heap is trimmed and regrown. Under a
# hypervisor those faults are slow and noisy: a NumPy mlp train_step took 11.3 ms with the
# defaults and 7.0 ms with these (cnn 74.6 -> 57.4 ms, 1 pinned thread), and importing torch
# alone changed NumPy's speed 1.6x by moving the heap. Every worker gets the same setting (a
# caller's own values win), so backends are compared on the same allocator, which is recorded
# in run.json (``env.malloc``).
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(64 << 20), "MALLOC_TRIM_THRESHOLD_": str(128 << 20)}
_MALLOPT = {"MALLOC_TRIM_THRESHOLD_": -1, "MALLOC_MMAP_THRESHOLD_": -3}  # glibc's M_TRIM_/M_MMAP_THRESHOLD


# OpenBLAS's idle workers spin (sched_yield) for 2^28 cycles, about 0.1 s, after each call before
# they sleep on a condition variable; OPENBLAS_THREAD_TIMEOUT=n makes that 2^n cycles (n clamped to
# 4..30, read once when the library loads: blas_server.c). A backend that runs its own thread pool
# between GEMMs then shares the cores with spinning BLAS threads: at 2 threads the Numba cnn step
# took 21.7-23.1 ms with the default and 19.3-19.6 ms with n = 4 (`bench layers`, alternated); the
# NumPy cnn step, whose own ops are single-threaded, 28.9-30.4 against 29.6-30.0. With one thread
# OpenBLAS has no workers and the setting does nothing. Every worker gets it (a caller's own value
# wins); run.json records it (``env.blas_wait``).
BLAS_WAIT_ENV = {"OPENBLAS_THREAD_TIMEOUT": "4"}


def apply_blas_wait_here() -> str:
    """``BLAS_WAIT_ENV`` in this process's environment, for tools that time in-process (``bench
    layers``); it takes effect only if OpenBLAS is not loaded yet. Returns what it did."""
    import sys

    for key, value in BLAS_WAIT_ENV.items():
        os.environ.setdefault(key, value)
    settings = " ".join(f"{k}={os.environ[k]}" for k in BLAS_WAIT_ENV)
    if "numpy" in sys.modules:
        return f"blas wait: {settings} set too late (NumPy's OpenBLAS already loaded)"
    return f"blas wait: {settings} (as in the workers)"


def apply_malloc_here() -> str:
    """The workers' malloc settings in this running process (glibc reads ``MALLOC_ENV`` only at
    start; ``mallopt`` sets the same values now), for tools that time in-process such as
    ``bench layers``: without them its NumPy cnn step took 49-54 ms, with them 36 ms (2 threads).
    Returns what it did, for the tool to print."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError) as e:
        return f"malloc: defaults (no glibc mallopt: {e})"
    values = {k: int(os.environ.get(k, v)) for k, v in MALLOC_ENV.items()}
    if not all(mallopt(_MALLOPT[k], v) == 1 for k, v in values.items()):
        return "malloc: defaults (mallopt refused)"
    return "malloc: " + " ".join(f"{k}={v}" for k, v in values.items()) + " (as in the workers)"


NNBENCH_CPUS = "NNBENCH_CPUS"  # comma list: the CPUs every worker process is pinned to


def pin_cpus(threads: int) -> list[int]:
    """The CPUs a pinned run keeps its workers on: the last ``threads`` this process may use (the
    first is where the system's own work tends to land). Pinned to one core, a worker's in-run
    ratio against numpy had a run-to-run sd of 0.3-4.7 %; unpinned at 2 threads, 3-15 %
    (``bench/judge/compare.py``, rule 4)."""
    usable = usable_cpus()
    if threads > len(usable):
        raise ValueError(f"cannot pin {threads} threads to {len(usable)} usable CPUs")
    return usable[-threads:]


def apply_pinning(cpus: list[int] | None) -> None:
    """Tell the workers this run starts which CPUs to pin themselves to (none: not pinned)."""
    if cpus:
        os.environ[NNBENCH_CPUS] = ",".join(str(c) for c in cpus)
    else:
        os.environ.pop(NNBENCH_CPUS, None)


def pin_from_env() -> list[int] | None:
    """In a worker, before any library starts its threads: pin this process to ``NNBENCH_CPUS``."""
    value = os.environ.get(NNBENCH_CPUS)
    if not value or not hasattr(os, "sched_setaffinity"):
        return None
    cpus = [int(c) for c in value.split(",")]
    os.sched_setaffinity(0, cpus)
    return cpus


def usable_cpus() -> list[int]:
    """The CPUs this process may run on."""
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))


def default_threads() -> int:
    return len(usable_cpus())


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
