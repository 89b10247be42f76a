"""The machine and software a run measured: written into ``run.json`` and joined onto every
report row (``env_*`` columns).

Nothing here imports a framework: library versions come from package metadata, the BLAS from
threadpoolctl (NumPy is already loaded), the GPU from ``nvidia-smi`` when it exists.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

LIBRARIES = (
    "numpy", "numba", "torch", "tensorflow-cpu", "tensorflow", "keras", "jax", "jaxlib",
    "cupy-cuda12x", "cupy-cuda13x", "pytest-benchmark",
)  # fmt: skip
REPO = Path(__file__).resolve().parents[2]


SIMD_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "amx_tile", "neon", "sve")


def cpu_info() -> dict[str, str]:
    """CPU model and the SIMD extensions that decide GEMM speed, from ``py-cpuinfo``."""
    import cpuinfo

    info = cpuinfo.get_cpu_info()
    flags = set(info.get("flags", ()))
    return {
        "cpu_model": str(info.get("brand_raw") or platform.processor() or platform.machine()),
        "cpu_simd": ",".join(f for f in SIMD_FLAGS if f in flags) or "none listed",
    }


def kind_env() -> dict[str, Any]:
    """What ``bench.judge.baseline.machine_kind`` reads (SIMD extensions, usable cores), without the rest
    of ``collect``: the gate picks its baseline, or its A/B, before a run starts."""
    return {
        "cpu_simd": cpu_info()["cpu_simd"],
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0),
    }


def library_versions() -> dict[str, str]:
    out = {}
    for name in LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def gpu() -> str:
    """``name, driver, memory`` of each GPU from nvidia-smi, or ``"none"``."""
    if not shutil.which("nvidia-smi"):
        return "none"
    try:
        res = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"none (nvidia-smi failed: {e})"
    lines = [ln.strip() for ln in res.stdout.splitlines() if ln.strip()]
    return "; ".join(lines) if res.returncode == 0 and lines else "none"


def git_commit() -> str:
    """``HEAD`` commit, with ``+dirty`` when the working tree has changes; ``"unknown"`` outside git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (head + ("+dirty" if dirty else "")) if head else "unknown"


def _worker_settings(defaults: dict[str, str]) -> str:
    """``KEY=value`` for each variable ``bench.measure.spawn`` gives the workers: the caller's own value,
    else the default."""
    return " ".join(f"{k}={os.environ.get(k, v)}" for k, v in defaults.items())


def malloc_settings() -> str:
    """glibc malloc tunables the workers run with (``bench.core.threads.MALLOC_ENV``)."""
    from bench.core.threads import MALLOC_ENV

    return _worker_settings(MALLOC_ENV)


def blas_wait_settings() -> str:
    """How long OpenBLAS's idle workers spin (``bench.core.threads.BLAS_WAIT_ENV``)."""
    from bench.core.threads import BLAS_WAIT_ENV

    return _worker_settings(BLAS_WAIT_ENV)


def collect(threads: int | None = None) -> dict[str, Any]:
    """Flat dict of environment columns (strings and ints only, so it joins onto a DataFrame)."""
    import numpy  # noqa: F401  # loads the BLAS, so threadpoolctl can name it

    from bench.core.threads import blas_info, configured_threads

    blas = blas_info()
    versions = library_versions()
    info: dict[str, Any] = {
        "hostname": socket.gethostname(),
        **cpu_info(),
        "cpu_cores": os.cpu_count() or 0,
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0),
        "threads": threads or configured_threads(),
        "blas": str(blas.get("blas", "unknown")),
        "gpu": gpu(),
        "git_commit": git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "python_executable": sys.executable,
        "malloc": malloc_settings(),
        "blas_wait": blas_wait_settings(),
    }
    info.update({f"version_{k}": v for k, v in versions.items()})
    return info
