"""Memory bandwidth, STREAM-style: the second roof of the roofline beside the GEMM peak.

Two kernels over NumPy float64 arrays, the way STREAM (McCalpin) defines them:

- ``copy``: ``a = b`` (``np.copyto``): 2 words moved per element;
- ``triad``: ``a = b + s * c``. NumPy cannot fuse it, so it runs as two passes,
  ``a = s * c`` then ``a += b``, and is credited with the 5 words those passes move
  (STREAM's fused loop moves 3). Both count what is read and written, not the
  write-allocate reads a cache adds: STREAM's convention.

Each kernel runs at three working-set sizes, one per memory level, sized from the machine's own
cache sizes (``cache_sizes``, read from sysfs): half the per-core L2, half the last-level
cache, and four times the last-level cache (at least 64 MiB) for main memory. The arrays of a
level together fill its working set. At ``threads`` > 1 the arrays are split into one
contiguous chunk per thread, each pass run on Python threads (NumPy releases the GIL in these
loops). A figure is the best of ``rounds`` rounds (a bandwidth is what the machine can do, as
the GEMM peak), each round repeating the kernel until it lasts ``ROUND_MIN_S``, after one
untimed round (caches, threads and clock warm); the median is recorded beside it. The run
measures it before and after its cases, next to the GEMM peak (``bench.measure.worker.cmd_peak``),
and flags a run whose two figures moved apart (``bench.measure.stability``).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROUND_MIN_S = 0.005
WORD = 8  # float64
KERNELS: dict[str, tuple[int, int]] = {"copy": (2, 2), "triad": (3, 5)}  # arrays, words moved per element
LEVELS = ("L2", "LLC", "DRAM")
# when sysfs says nothing (a container without /sys, another OS): typical x86-64 server sizes
FALLBACK_CACHE = {"L2": 1 << 20, "LLC": 32 << 20}
SYSFS = Path("/sys/devices/system/cpu/cpu0/cache")


def cache_sizes(root: Path = SYSFS) -> dict[str, Any]:
    """``{"L2": bytes, "LLC": bytes, "source": ...}``: the per-core L2 and the largest (last-level)
    data or unified cache of CPU 0, from sysfs, else ``os.sysconf``, else ``FALLBACK_CACHE``."""
    sizes: dict[int, int] = {}
    for idx in sorted(root.glob("index*")) if root.is_dir() else ():
        try:
            if (idx / "type").read_text().strip() == "Instruction":
                continue
            level, size = int((idx / "level").read_text()), _size((idx / "size").read_text())
        except (OSError, ValueError):
            continue
        sizes[level] = max(sizes.get(level, 0), size)
    if 2 in sizes:
        return {"L2": sizes[2], "LLC": sizes[max(sizes)], "source": "sysfs"}
    conf = {k: _sysconf(f"SC_LEVEL{k}_CACHE_SIZE") for k in (2, 3)}
    if conf[2]:
        return {"L2": conf[2], "LLC": conf[3] or conf[2], "source": "sysconf"}
    return {**FALLBACK_CACHE, "source": "assumed (no sysfs or sysconf cache sizes)"}


def _size(text: str) -> int:
    """sysfs's ``"2048K"`` / ``"32M"`` / ``"512"`` in bytes."""
    t = text.strip().upper()
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1:], 1)
    return int(t[:-1] if t[-1:] in "KMG" else t) * mult


def _sysconf(name: str) -> int:
    try:
        return max(int(os.sysconf(name)), 0)
    except (ValueError, OSError):
        return 0


def working_sets(caches: dict[str, Any]) -> dict[str, int]:
    """Bytes all of a kernel's arrays span together, per level."""
    return {"L2": caches["L2"] // 2, "LLC": caches["LLC"] // 2, "DRAM": max(4 * caches["LLC"], 64 << 20)}


def _kernel(name: str, arrays: list[Any]) -> Callable[[], None]:
    import numpy as np

    if name == "copy":
        a, b = arrays
        return lambda: np.copyto(a, b)
    a, b, c = arrays

    def triad() -> None:
        np.multiply(c, 3.0, out=a)  # a = s * c
        np.add(a, b, out=a)  # a = b + s * c

    return triad


def measure(kernel: str, ws_bytes: int, threads: int, rounds: int) -> dict[str, Any]:
    """One kernel at one working-set size: GB/s of the best and of the median round."""
    import numpy as np

    n_arrays, words = KERNELS[kernel]
    n = max(ws_bytes // (n_arrays * WORD), 1024 * threads)  # elements per array
    full = [np.full(n, 1.0 + i) for i in range(n_arrays)]  # touched: the pages exist before timing
    bounds = [(k * n // threads, (k + 1) * n // threads) for k in range(threads)]
    parts = [_kernel(kernel, [x[lo:hi] for x in full]) for lo, hi in bounds]
    moved = words * WORD * n  # bytes one pass over all chunks moves
    with ThreadPoolExecutor(threads) if threads > 1 else _Serial() as pool:

        def one_pass(reps: int) -> float:
            t0 = time.perf_counter()
            list(pool.map(lambda f: [f() for _ in range(reps)], parts))
            return time.perf_counter() - t0

        one_pass(1)  # first touch: caches filled, threads started
        reps = max(1, int(ROUND_MIN_S / max(one_pass(1), 1e-7)) + 1)
        one_pass(reps)  # a whole untimed round: the core at its working clock before the timed ones
        times = [one_pass(reps) / reps for _ in range(rounds)]
    return {
        "kernel": kernel,
        "ws_bytes": n_arrays * WORD * n,
        "threads": threads,
        "gbps": moved / min(times) / 1e9,
        "gbps_median": moved / statistics.median(times) / 1e9,
        "samples_s": times,
    }


class _Serial:
    """A one-thread stand-in for the executor: no thread handoff at one thread."""

    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        return [fn(x) for x in items]


def measure_all(threads: int, rounds: int = 7, caches: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every kernel at every level, at ``threads`` threads: one dict per (level, kernel), with the
    cache sizes the working sets were taken from."""
    caches = caches or cache_sizes()
    ws = working_sets(caches)
    out = []
    for level in LEVELS:
        for kernel in KERNELS:
            r = measure(kernel, ws[level], threads, rounds if level != "DRAM" else max(3, rounds // 2))
            out.append({"level": level, **r, "cache_bytes": caches.get(level), "cache_source": caches["source"]})
    return out
