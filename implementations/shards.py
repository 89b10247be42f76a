"""Data parallelism inside one step, for the CPU backends that run their own passes (NumPy,
Numba): at T > 1 threads the batch is split into T shards (``split``), each shard's whole forward
and backward runs on its own Python thread with single-threaded BLAS, and the shards' gradients
are summed, each thread summing and applying its share (``balance``) after a barrier.

Why: with one batch on T-thread kernels, every GEMM and every small kernel wakes the other
threads again, and the small kernels (NumPy's own ops run on one thread at any thread count) do
not scale. A shard is one core's uninterrupted stream of work; the cores meet once per step.

What must hold for the shards to run side by side: their kernels release the GIL (NumPy's ufuncs
and GEMMs do; Numba's serial twins are ``nogil``); OpenBLAS's thread count is process-wide, so it
is one for the duration of the sharded work (``blas_threads``) and restored after; a backend's
per-thread state is set by the pool's ``setup`` (its threads) and ``here`` (the calling thread's
shard), e.g. Numba's serial kernels.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def split(n: int, threads: int, flops_per_param: float, min_flops_per_param: float) -> list[tuple[int, int]]:
    """[(s0, s1)]: n samples in ``threads`` contiguous shards of near-equal size, in order; one
    shard (the whole batch) at one thread, with fewer samples than threads, or when a shard
    would perform under ``min_flops_per_param`` FLOPs (forward and backward) per parameter
    (``flops_per_param``: the model's per sample). Every shard reads every weight and writes a
    whole gradient, which the gradient sum then reads again: a shard must do enough work per
    weight to pay for that (each backend measures its own threshold)."""
    if threads <= 1 or n < threads or (n // threads) * flops_per_param < min_flops_per_param:
        return [(0, n)]
    return [(n * t // threads, n * (t + 1) // threads) for t in range(threads)]


def flops_per_param(spec) -> float:
    """The spec's forward + backward FLOPs per parameter and sample (``split``'s measure)."""
    per_sample = spec.flops(1)
    return (per_sample["forward"] + per_sample["backward"]) / max(1, spec.num_params())


def balance(sizes: dict[str, int], threads: int) -> list[list[str]]:
    """The names in ``threads`` groups of near-equal total size (largest first, each to the
    lightest group): which thread sums and applies which parameters' gradients."""
    groups: list[list[str]] = [[] for _ in range(threads)]
    load = [0] * threads
    for name in sorted(sizes, key=lambda k: (-sizes[k], k)):
        t = load.index(min(load))
        groups[t].append(name)
        load[t] += sizes[name]
    return groups


def sum_and_apply(results: list, names: list[str], apply: Callable[[str, Any], None]) -> None:
    """One thread's second stage of a sharded step (``ShardPool.map``'s ``then``): for each of
    its ``names``, every shard's gradient added into shard 0's (results are the shards' (loss,
    grads) pairs, their arrays fresh), then ``apply(name, the sum)`` (the update)."""
    grads = results[0][1]
    for name in names:
        for _, other in results[1:]:
            grads[name] += other[name]
        apply(name, grads[name])


def on_each_thread(pool: ShardPool | None, fn: Callable[[], Any]) -> None:
    """fn() on each thread a model computes on: its pool's and this one, or this one alone."""
    if pool is None:
        fn()
    else:
        pool.on_each_thread(fn)


def shards_setting(threads: int, min_flops_per_param: float) -> str:
    """What a backend's ``settings()`` reports of its sharding at this thread count."""
    if threads <= 1:
        return "none (one thread: the whole batch on one thread)"
    return (
        f"{threads} per batch, one per thread, where each shard performs >= {min_flops_per_param:g} FLOP per "
        "parameter (1 BLAS thread each; gradients summed); else the whole batch on "
        f"{threads}-thread BLAS"
    )


def _blas_controllers() -> list:
    """threadpoolctl's controllers of the BLAS libraries loaded in this process."""
    from threadpoolctl import ThreadpoolController

    return [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]


@contextlib.contextmanager
def blas_threads(n: int, controllers: Sequence) -> Iterator[None]:
    """Every BLAS library in ``controllers`` at ``n`` threads inside, as it was after. OpenBLAS's
    limit is process-wide and threadpoolctl lets only one Python thread set it (the first that
    did); from any other thread the call does nothing, which is an error here: shards on a
    multi-threaded BLAS would fight for the cores."""
    before = [c.get_num_threads() for c in controllers]
    for c in controllers:
        c.set_num_threads(n)
    try:
        stuck = [f"{c.internal_api} at {c.get_num_threads()}" for c in controllers if c.get_num_threads() != n]
        if stuck:
            raise RuntimeError(f"could not set BLAS to {n} thread(s) from this thread: {', '.join(stuck)}")
        yield
    finally:
        for c, k in zip(controllers, before, strict=True):
            c.set_num_threads(k)


class ShardPool:
    """Runs one function per shard: shard 0 on the calling thread (inside ``here()``), the
    others on T - 1 persistent threads (each set up once by ``setup()``), all at one BLAS
    thread."""

    def __init__(
        self,
        threads: int,
        setup: Callable[[], None] | None = None,
        here: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
    ):
        self.threads, self.here = threads, here
        self.executor = ThreadPoolExecutor(threads - 1, "nnbench-shard", initializer=setup)
        self.blas = _blas_controllers()

    def map(
        self, fn: Callable[[int], Any], count: int, then: Callable[[int, list[Any]], None] | None = None
    ) -> list[Any]:
        """[fn(0), ..., fn(count - 1)], fn(t) on its own thread; with ``then``, each thread then
        runs then(t, results) once every fn has returned (a barrier between: the shards' second
        stage, such as each summing and applying its share of the gradients). Every shard has
        finished when this returns or raises; a shard's own exception is raised, not the broken
        barrier it leaves the others."""
        if count > self.threads:
            raise ValueError(f"{count} shards for {self.threads} threads")
        results: list[Any] = [None] * count
        barrier = threading.Barrier(count) if then is not None else None

        def task(t: int) -> None:
            try:
                results[t] = fn(t)
            except BaseException:
                if barrier is not None:
                    barrier.abort()  # the others stop waiting for this shard
                raise
            if barrier is not None and then is not None:
                barrier.wait()
                then(t, results)

        with blas_threads(1, self.blas):
            futures = [self.executor.submit(task, t) for t in range(1, count)]
            errors: list[BaseException] = []
            try:
                with self.here():
                    task(0)
            except BaseException as e:  # noqa: B036 - re-raised below, after every shard stopped
                errors.append(e)
            errors += [e for e in (f.exception() for f in futures) if e is not None]  # waits for all
        own = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
        if errors:
            raise (own or errors)[0]
        return results

    def on_each_thread(self, fn: Callable[[], Any]) -> None:
        """fn() once on each of the pool's threads and once on the calling thread (a profiler
        to start or stop in each). The barrier keeps a pool thread from taking two calls."""
        barrier = threading.Barrier(self.threads - 1)

        def task() -> None:
            barrier.wait(timeout=60)
            fn()

        futures = [self.executor.submit(task) for _ in range(self.threads - 1)]
        fn()
        for f in futures:
            f.result()

    def close(self) -> None:
        self.executor.shutdown(wait=True)


_POOLS: dict[tuple[str, int], ShardPool] = {}


def pool(
    backend: str,
    threads: int,
    setup: Callable[[], None] | None = None,
    here: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> ShardPool:
    """The process's pool of ``threads`` shards for ``backend`` (made once, shared by its models)."""
    key = (backend, threads)
    if key not in _POOLS:
        _POOLS[key] = ShardPool(threads, setup, here)
    return _POOLS[key]
