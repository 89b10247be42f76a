"""Numba implementation: ``@njit(cache=True)`` kernels, ``parallel=True`` + ``prange`` over
the batch (im2col, col2im, pooling) or over elements, float32 and float64.

A dense layer's SGD update is fused with its weight gradient (``blas``: one GEMM that
accumulates into W, called in NumPy's own BLAS). Convolutions are im2col (Numba) + GEMM
(NumPy's BLAS); a conv followed by relu and a 2x2
max-pool runs as one block (``conv_pool``: bias + relu + pool + argmax in one pass, their
backward in one pass, gather-form col2im, batch-sized buffers reused across steps), and as
Winograd F(2x2, 3x3) where the conv is 3x3 'same' (``winograd``: 16 GEMMs, 2.25x fewer
multiply-adds).
Against direct Numba loops
(``kernels.conv_direct_forward``; ``python -m bench.measure.probe.microbench conv``), single
threaded at batch 50 float32, im2col+GEMM was ~2x faster on the 32->64 and 64->128 convs
of the ``cnn`` preset and ~0.8x on the 1->32 one, so it is kept; with 2 threads on an
oversubscribed 2-core machine the direct loops won (BLAS threads contending), to re-check.
The thread count is ``bench.core.threads.configured_threads()`` (``numba.set_num_threads``). At more
than one thread a batch with enough work is split into one shard per thread (``shards``): each
shard's pass runs on its own Python thread (``implementations.shards``) with serial ``nogil``
kernels and single-threaded BLAS,
then the shards' gradients are summed; at one thread every kernel is its serial twin.
Compilation is kept out of the speed numbers and measured apart by the run, as for every
backend with an on-disk compile cache: the profiles' ``cache_env = "NUMBA_CACHE_DIR"`` gives
each case an empty cache, so ``bench.measure.worker``'s first calls are cold (``cold_s``), then a
fresh process over the filled cache gives ``warm_cache_s`` (the ``compile`` records).
"""

from __future__ import annotations

REQUIRES: tuple[str, ...] = ()


def available() -> tuple[bool, str]:
    try:
        import numba

        return True, f"numba {numba.__version__}"
    except Exception as e:
        return False, f"import numba failed: {type(e).__name__}: {e}"


def build(spec, params, dtype: str = "float32", seed: int = 0):
    from .model import NumbaModel

    return NumbaModel(spec, params, dtype, seed=seed)


def _fused_update() -> str:
    from .blas import FUSED, REASON

    how = "fused with the weight gradient in one GEMM (plain SGD, one shard)" if FUSED else "separate GEMM + SGD"
    return f"{how}: {REASON}"


def settings() -> dict:
    import numba
    import numpy

    from bench.core.threads import blas_info
    from implementations.shards import shards_setting

    from .model import SHARD_MIN_FLOPS, set_threads

    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        layer = f"not yet chosen (config: {numba.config.THREADING_LAYER})"
    return {
        "library": f"numba {numba.__version__}, numpy {numpy.__version__}",
        "device": "cpu",
        "layout": "NHWC internal; conv = im2col (numba) + GEMM (numpy BLAS), conv+relu+pool fused",
        "numba_threads": set_threads(),
        "shards": shards_setting(set_threads(), SHARD_MIN_FLOPS),
        "threading_layer": layer,
        "dense_sgd_update": _fused_update(),
        **blas_info(),
    }
