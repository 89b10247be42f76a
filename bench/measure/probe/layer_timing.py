"""``python -m bench layers``: where a train step's time goes, per function.

Builds each implementation on a preset, warms it up, then runs ``steps`` train steps under
cProfile and prints the functions with the largest own time (ms per step and share of the
step). In the NumPy and Numba backends every kernel and every GEMM of the fused conv blocks
is its own named function (``gemm_forward``, ``gemm_weight_grad``, ``gemm_input_grad``,
``bias_relu_pool``, ...), so the table is a per-operation breakdown; repeated layers of a
kind are summed. cProfile adds a little Python overhead per call: read shares, not
absolute times, and compare implementations run in the same process.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import threading
import time
from typing import Any

from bench.core.threads import apply_blas_wait_here, apply_malloc_here, apply_threads, configured_threads


def _build(impl: str, model: str, batch: int, dtype: str) -> tuple[Any, Any]:
    import numpy as np

    from bench.core.params import init_params
    from bench.plan import backends
    from bench.plan.presets import preset

    spec = preset(model)
    rng = np.random.default_rng(1)
    x = rng.random((batch, *spec.input_shape)).astype(dtype)  # (N, C, H, W)
    y = np.eye(spec.num_classes, dtype=dtype)[rng.integers(0, spec.num_classes, batch)]
    m = backends.get(impl).build(spec, init_params(spec, 0), dtype)
    xd, yd = m.to_device(x), m.to_device(y)
    return m, lambda: (m.train_step(xd, yd), m.sync())


def _on_each_thread(model: Any):
    """The model's ``on_each_thread`` (fn run once on each thread it computes on: the Numba
    shards' threads), else fn on this thread alone."""
    return getattr(model, "on_each_thread", lambda fn: fn())


def breakdown(
    impl: str, model: str, batch: int, dtype: str, steps: int, top: int
) -> tuple[list[tuple[str, float, int]], int]:
    """([(function, own ms per step, calls per step)] for the ``top`` largest, plus ``step``
    (the plain wall time of one step, outside the profiler), the number of threads profiled).
    A model that computes on several Python threads (Numba's data-parallel shards) is profiled
    on each of them: own times and calls are then summed over the threads."""
    m, step = _build(impl, model, batch, dtype)
    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    wall_ms = (time.perf_counter() - t0) * 1e3 / steps
    profs: dict[int, cProfile.Profile] = {}
    each = _on_each_thread(m)
    each(lambda: profs.setdefault(threading.get_ident(), cProfile.Profile()).enable())
    for _ in range(steps):
        step()
    each(lambda: profs[threading.get_ident()].disable())
    stats = pstats.Stats(*profs.values()).stats  # {(file, line, name): (cc, nc, tt, ct, callers)}
    rows = []
    for (file, _, name), (_, calls, own, _, _) in stats.items():
        label = f"{file.rsplit('/', 2)[-2]}/{file.rsplit('/', 1)[-1]}:{name}" if "/" in file else name
        rows.append((label, own * 1e3 / steps, calls // steps))
    rows.sort(key=lambda r: -r[1])
    return [("step (wall, unprofiled)", wall_ms, 1), *rows[:top]], len(profs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench layers", description=__doc__.splitlines()[0])
    ap.add_argument("--impls", default="numpy,numba", help="comma-separated implementations")
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--threads", type=int, default=0, help="0: the harness default")
    args = ap.parse_args(argv)
    apply_threads(args.threads or configured_threads())  # before NumPy or a framework is imported
    print(apply_blas_wait_here())
    print(apply_malloc_here())  # the workers' allocator: the breakdown matches what the run times
    for impl in args.impls.split(","):
        rows, threads = breakdown(impl, args.model, args.batch, args.dtype, args.steps, args.top)
        step_ms = rows[0][1]
        print(f"\n{impl} {args.model} batch {args.batch} {args.dtype}: train_step {step_ms:.2f} ms")
        if threads > 1:
            print(f"  (profiled on its {threads} threads: times and calls summed, shares of {threads} x the step)")
        for label, ms, calls in rows[1:]:
            print(f"  {ms:8.2f} ms {100 * ms / (threads * step_ms):5.1f}%  x{calls:<3d} {label}")
    print("\nload average: " + " ".join(f"{v:.2f}" for v in os.getloadavg()))
    return 0
