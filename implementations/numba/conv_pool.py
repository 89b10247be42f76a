"""Fused conv -> relu -> 2x2 max-pool blocks for the Numba backend, with reused buffers.

Forward, chunk by chunk over the batch (``chunks``: ~2.5 MB of columns a chunk where the
kernels run serial, at one thread or in a data-parallel shard, so each stage's output is still
in cache for the next; the whole batch on multi-threaded kernels):
im2col (Numba) into a chunk-sized ``cols``, one GEMM (NumPy BLAS) into a chunk-sized ``z``,
then ``bias_relu_pool``: bias + relu + 2x2 max-pool + argmax in one pass over ``z`` (the
full-resolution relu output is never written). Backward, the same chunks, last first:
``pool_relu_grad_bias`` writes the chunk's pre-activation gradient ``dz`` (each window's
argmax cell gets ``dy`` where the pooled output is > 0, the three other cells and the
floored rows/columns get 0) and adds to the bias gradient; im2col again (the forward keeps
only its input; ``cols`` still holds the forward's last chunk, so that one is not rebuilt);
``dW += dz^T @ cols``; and, unless the layer is the first, ``dcols = dz @ W`` written over
the spent ``cols`` and the gather-form ``kernels.col2im_into`` (each input pixel sums its k*k taps:
no zeroing pass, no scatter). A 3x3 conv on one input channel whose input needs no gradient
(the first layer) skips im2col and the GEMM: ``conv3x3_bias_relu_pool`` computes each pool
window's four cells from its 4x4 input patch, and ``relu_pool_conv3x3_weight_grad`` its
weight and bias gradients (``direct``). A 3x3 'same' conv otherwise (MNIST's conv2 and conv3)
takes Winograd F(2x2, 3x3) (``winograd``; each pool window one tile, 2.25x fewer multiply-adds
in 16 GEMMs, the output transform fused with bias, relu and pool). Every buffer is allocated once per (layer, shape) in
a ``Workspace`` and reused across steps; gradients are fresh arrays (callers keep them). The
general path (``model._param_forward`` etc.) handles every other pattern.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import kernels as K
from . import winograd


def fusable(layers, i: int) -> bool:
    """Layer i is a conv followed by relu and a 2x2 max-pool (any padding, kernel, size)."""
    if i + 2 >= len(layers):
        return False
    conv, act, pool = layers[i], layers[i + 1], layers[i + 2]
    return conv.type == "conv2d" and act.type == "relu" and pool.type == "maxpool2d" and pool.size == 2


class Workspace:
    """Arrays reused across steps, one per (key, shape, dtype); ``holds[key]`` names the
    forward (its ``Cache``) whose last chunk of columns the array still holds, if any."""

    def __init__(self):
        self.arrays: dict = {}
        self.holds: dict = {}

    def get(self, key, shape: tuple, dtype) -> np.ndarray:
        a = self.arrays.get(key)
        if a is None or a.shape != shape or a.dtype != dtype:
            a = self.arrays[key] = np.empty(shape, dtype=dtype)
        return a


def uses_winograd(layer, x_shape: tuple) -> bool:
    """The block takes Winograd F(2x2, 3x3) (``winograd``): a 3x3 'same' conv that is not
    ``direct``. Every other conv takes im2col + GEMM."""
    return winograd.applies(layer, x_shape)


def direct(layer, x_shape: tuple, need_dx: bool) -> bool:
    """The block takes the direct 3x3 kernels (``conv3x3_bias_relu_pool``): a 3x3 conv on one
    input channel whose input needs no gradient (the network's first layer). Every other
    conv (more channels, other kernels, an input gradient) takes im2col + GEMM."""
    return layer.kernel == 3 and x_shape[3] == 1 and not need_dx


class Cache:
    """What the fused block's backward needs (stored at the pool layer's index): the block's
    input ``x`` itself (the backward rebuilds each chunk's im2col from it), the pooled output
    and its argmax, and the forward's chunks (``parts``; the backward runs the same ones)."""

    __slots__ = ("x", "z_shape", "arg", "out", "direct", "parts", "wino")

    def __init__(self, x, z_shape, arg, out, direct=False, parts=(), wino=None):
        self.x, self.z_shape, self.arg, self.out, self.direct = x, z_shape, arg, out, direct
        self.parts, self.wino = parts, wino  # wino: (V of the whole batch, chunk by chunk; U)


# Samples per chunk at one thread: im2col's columns for one chunk are about this many bytes,
# so they are still in cache when the GEMM reads them, and the GEMM's output when
# ``bias_relu_pool`` (or ``col2im_into``) reads it. Measured, MNIST cnn, batch 50, 1 pinned
# thread: the Numba train_step 37.3-38.8 -> 34.4-35.3 ms (alternated); 0.6 MB chunks 41 ms
# (more, smaller calls), 5 MB 38 ms. At 2 threads with the whole batch on 2-thread kernels the
# chunks lost (22.0 against 19.6-20.5 ms): every chunk's GEMMs and kernels wake the other thread
# again, so there the batch is one chunk. Each data-parallel shard (``shards``) runs serial, so in
# chunks: 2 threads, 2 shards of 25, equal-size chunks, medians of 20 alternated rounds (a
# Zen 4 EPYC, 2026-12-04): 1.25 MB 17.3 ms, 2.5 MB 17.3, 5 MB 17.8, one chunk a shard 19.6.
CHUNK_BYTES = 2_500_000
# The Winograd block's chunks: about this many bytes of M (16 * tiles * max(C, O) values a sample;
# V is half that for conv2), so M, V and dV stay near L2 between the transforms and the GEMMs.
# MNIST cnn, batch 50, train_step medians of 3 alternated rounds (Zen 4 EPYC, 2026-12-04): 1 pinned
# thread 0.4 MB 18.5 ms, 0.8 MB 17.3, 1.6 MB 17.2, 2.5 MB 19.1, 5 MB 21.9; 2 threads (shards)
# 0.8 MB 14.4, 1.2 MB 12.4, 1.6 MB 11.4, 2.5 MB 12.5; batch 256 at 1 thread 0.8-1.6 MB all 92-94.
WINOGRAD_CHUNK_BYTES = 1_600_000


def chunks(n: int, bytes_per_sample: int) -> list[tuple[int, int]]:
    """[(s0, s1)]: the batch in the fewest near-equal chunks of at most about ``CHUNK_BYTES`` of
    columns each (at least one sample) where this thread runs serial kernels (one thread, or a
    shard), one chunk otherwise. Equal sizes, not full chunks and a remainder: a shard of 25
    samples of conv2 went 11 + 11 + 3, whose small last GEMM ran below the others' speed."""
    if not K.runs_serial():
        return [(0, n)]
    count = min(n, -(-n * max(1, bytes_per_sample) // CHUNK_BYTES))  # ceil, at most n
    return [(n * t // count, n * (t + 1) // count) for t in range(count)]


# ---------------------------------------------------------------------- kernels
# Each is a per-sample body run by a serial (``nogil``) and a parallel twin over the batch;
# ``K.by_threads`` chooses (a data-parallel shard runs the serial ones).
@njit(cache=True)
def _bias_relu_pool_sample(z, b, out, arg, s):
    ho, wo, o = out.shape[1], out.shape[2], out.shape[3]
    one = K._one(z)
    zero = one - one
    for yy in range(ho):
        for xx in range(wo):
            z0, z1 = z[s, 2 * yy, 2 * xx], z[s, 2 * yy, 2 * xx + 1]
            z2, z3 = z[s, 2 * yy + 1, 2 * xx], z[s, 2 * yy + 1, 2 * xx + 1]
            for c in range(o):
                best, a = K.relu_max(z0[c] + b[c], zero, 0, z1[c] + b[c], 1)
                best, a = K.relu_max(best, zero, a, z2[c] + b[c], 2)
                best, a = K.relu_max(best, zero, a, z3[c] + b[c], 3)
                out[s, yy, xx, c] = best
                arg[s, yy, xx, c] = a


@njit(cache=True, nogil=True)
def bias_relu_pool_ser(z, b, out, arg):
    for s in range(z.shape[0]):
        _bias_relu_pool_sample(z, b, out, arg, s)


@njit(parallel=True, cache=True)
def bias_relu_pool_par(z, b, out, arg):
    for s in prange(z.shape[0]):
        _bias_relu_pool_sample(z, b, out, arg, s)


def bias_relu_pool(z, b, out, arg) -> None:
    """z (N, H, W, O) conv output without bias -> out (N, H//2, W//2, O) = 2x2 max-pool
    (floor) of relu(z + b), arg (int8 0..3) = row-major window cell of the first maximum.
    NaN propagates as in the reference: relu keeps it and it wins the window (its first NaN)."""
    K.by_threads(bias_relu_pool_ser, bias_relu_pool_par)(z, b, out, arg)


@njit(cache=True)
def _pool_relu_grad_sample(dy, arg, out, dz, part, s):
    """Sample s of ``pool_relu_grad_bias``: dz[s], and part[s] = its sum over the cells."""
    ho, wo, o = dy.shape[1], dy.shape[2], dy.shape[3]
    h, w = dz.shape[1], dz.shape[2]
    one = K._one(dz)
    zero = one - one
    for yy in range(ho):
        for xx in range(wo):
            for c in range(o):
                g = dy[s, yy, xx, c] if out[s, yy, xx, c] > zero else zero
                q = arg[s, yy, xx, c]
                part[s, c] += g
                for t in range(4):
                    dz[s, 2 * yy + t // 2, 2 * xx + t % 2, c] = g if t == q else zero
    for yy in range(2 * ho, h):  # floored bottom row
        for xx in range(w):
            for c in range(o):
                dz[s, yy, xx, c] = zero
    for yy in range(2 * ho):  # floored right column
        for xx in range(2 * wo, w):
            for c in range(o):
                dz[s, yy, xx, c] = zero


@njit(cache=True, nogil=True)
def pool_relu_grad_bias_ser(dy, arg, out, dz, db):
    part = np.zeros((dy.shape[0], dy.shape[3]), dtype=np.float64)
    for s in range(dy.shape[0]):
        _pool_relu_grad_sample(dy, arg, out, dz, part, s)
    K.add_sample_sums(part, db)


@njit(parallel=True, cache=True)
def pool_relu_grad_bias_par(dy, arg, out, dz, db):
    part = np.zeros((dy.shape[0], dy.shape[3]), dtype=np.float64)
    for s in prange(dy.shape[0]):
        _pool_relu_grad_sample(dy, arg, out, dz, part, s)
    K.add_sample_sums(part, db)


def pool_relu_grad_bias(dy, arg, out, dz, db) -> None:
    """Backward of ``bias_relu_pool``: dz (N, H, W, O) = dy routed to each window's argmax
    cell where out > 0, else 0 (floored rows/cols too); adds the sum of dz over these N
    samples to db (float64, so a batch run chunk by chunk sums as one)."""
    K.by_threads(pool_relu_grad_bias_ser, pool_relu_grad_bias_par)(dy, arg, out, dz, db)


# ---------------------------------------------------------------------- direct 3x3 kernels, one input channel
# A 2x2 pool window of 3x3 convolutions reads a 4x4 input patch: its 16 values are held in
# registers while the loop over output channels (vectorised, FMA-contracted) computes the
# window's four 9-tap sums. This replaces im2col's (N*Ho*Wo, 9) matrix, whose K = 9 GEMM runs
# BLAS at a third of its peak, for the network's first layer (MNIST's conv1).
@njit(cache=True, inline="always")
def _taps(a0, a1, a2, b0, b1, b2, c0, c1, c2, wt, oo):
    """One cell's sum over the 9 taps: each kernel row's three products summed, then the three
    row sums."""
    sa = a0 * wt[0, oo] + a1 * wt[1, oo] + a2 * wt[2, oo]
    sb = b0 * wt[3, oo] + b1 * wt[4, oo] + b2 * wt[5, oo]
    sc = c0 * wt[6, oo] + c1 * wt[7, oo] + c2 * wt[8, oo]
    return sa + sb + sc


@njit(cache=True, inline="always")
def _patch(xp, y, x):
    """The 4x4 patch xp[y:y+4, x:x+4] as 16 scalars, row by row (rows a, b, c, d)."""
    r0, r1, r2, r3 = xp[y], xp[y + 1], xp[y + 2], xp[y + 3]
    return (
        *(r0[x], r0[x + 1], r0[x + 2], r0[x + 3]),
        *(r1[x], r1[x + 1], r1[x + 2], r1[x + 3]),
        *(r2[x], r2[x + 1], r2[x + 2], r2[x + 3]),
        *(r3[x], r3[x + 1], r3[x + 2], r3[x + 3]),
    )


@njit(cache=True)
def _padded(x, s, p):
    """Sample s of x (N, H, W, 1) as an (H + 2p, W + 2p) array with a zero border."""
    h, w = x.shape[1], x.shape[2]
    xp = np.zeros((h + 2 * p, w + 2 * p), dtype=x.dtype)
    for yy in range(h):
        for xx in range(w):
            xp[yy + p, xx + p] = x[s, yy, xx, 0]
    return xp


@njit(cache=True, fastmath={"contract"})
def _conv3x3_pool_sample(x, wt, b, p, out, arg, s):
    one = K._one(x)
    zero = one - one
    xp = _padded(x, s, p)
    for yy in range(out.shape[1]):
        for xx in range(out.shape[2]):
            a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, d0, d1, d2, d3 = _patch(xp, 2 * yy, 2 * xx)
            for oo in range(wt.shape[1]):
                v0 = _taps(a0, a1, a2, b0, b1, b2, c0, c1, c2, wt, oo) + b[oo]
                v1 = _taps(a1, a2, a3, b1, b2, b3, c1, c2, c3, wt, oo) + b[oo]
                v2 = _taps(b0, b1, b2, c0, c1, c2, d0, d1, d2, wt, oo) + b[oo]
                v3 = _taps(b1, b2, b3, c1, c2, c3, d1, d2, d3, wt, oo) + b[oo]
                best, a = K.relu_max(v0, zero, 0, v1, 1)
                best, a = K.relu_max(best, zero, a, v2, 2)
                best, a = K.relu_max(best, zero, a, v3, 3)
                out[s, yy, xx, oo] = best
                arg[s, yy, xx, oo] = a


@njit(cache=True, nogil=True)
def conv3x3_bias_relu_pool_ser(x, wt, b, p, out, arg):
    for s in range(x.shape[0]):
        _conv3x3_pool_sample(x, wt, b, p, out, arg, s)


@njit(parallel=True, cache=True)
def conv3x3_bias_relu_pool_par(x, wt, b, p, out, arg):
    for s in prange(x.shape[0]):
        _conv3x3_pool_sample(x, wt, b, p, out, arg, s)


def conv3x3_bias_relu_pool(x, wt, b, p: int, out, arg) -> None:
    """Direct 3x3 conv (one input channel) + bias + relu + 2x2 max-pool + argmax: x (N, H, W, 1),
    wt (9, O) -> out, arg (N, Ho//2, Wo//2, O) exactly as ``bias_relu_pool`` defines them (ties to
    the first cell, a NaN wins). The floored row/column of an odd conv output is not computed."""
    K.by_threads(conv3x3_bias_relu_pool_ser, conv3x3_bias_relu_pool_par)(x, wt, b, p, out, arg)


@njit(cache=True, fastmath={"contract"})
def _conv3x3_grad_sample(x, dy, arg, out, p, acc, s):
    """Sample s's partial sums into acc (10, O): rows 0-8 the taps, row 9 the bias."""
    o = dy.shape[3]
    one = K._one(x)
    zero = one - one
    xp = _padded(x, s, p)
    for yy in range(dy.shape[1]):
        for xx in range(dy.shape[2]):
            a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, d0, d1, d2, d3 = _patch(xp, 2 * yy, 2 * xx)
            for oo in range(o):
                g = dy[s, yy, xx, oo] if out[s, yy, xx, oo] > zero else zero
                q = arg[s, yy, xx, oo]
                g0, g1 = (g if q == 0 else zero), (g if q == 1 else zero)
                g2, g3 = (g if q == 2 else zero), (g if q == 3 else zero)
                acc[0, oo] += g0 * a0 + g1 * a1 + g2 * b0 + g3 * b1
                acc[1, oo] += g0 * a1 + g1 * a2 + g2 * b1 + g3 * b2
                acc[2, oo] += g0 * a2 + g1 * a3 + g2 * b2 + g3 * b3
                acc[3, oo] += g0 * b0 + g1 * b1 + g2 * c0 + g3 * c1
                acc[4, oo] += g0 * b1 + g1 * b2 + g2 * c1 + g3 * c2
                acc[5, oo] += g0 * b2 + g1 * b3 + g2 * c2 + g3 * c3
                acc[6, oo] += g0 * c0 + g1 * c1 + g2 * d0 + g3 * d1
                acc[7, oo] += g0 * c1 + g1 * c2 + g2 * d1 + g3 * d2
                acc[8, oo] += g0 * c2 + g1 * c3 + g2 * d2 + g3 * d3
                acc[9, oo] += g


@njit(cache=True, inline="always")
def _sum_partials(part, dwt, db):
    """The per-sample partials (N, 10, O) summed over the batch in float64 into dwt (9, O), db."""
    for t in range(10):
        for oo in range(part.shape[2]):
            total = 0.0
            for s in range(part.shape[0]):
                total += part[s, t, oo]
            if t < 9:
                dwt[t, oo] = total
            else:
                db[oo] = total


@njit(cache=True, nogil=True)
def relu_pool_conv3x3_weight_grad_ser(x, dy, arg, out, p, dwt, db):
    part = np.zeros((x.shape[0], 10, dy.shape[3]), dtype=x.dtype)
    for s in range(x.shape[0]):
        _conv3x3_grad_sample(x, dy, arg, out, p, part[s], s)
    _sum_partials(part, dwt, db)


@njit(parallel=True, cache=True)
def relu_pool_conv3x3_weight_grad_par(x, dy, arg, out, p, dwt, db):
    part = np.zeros((x.shape[0], 10, dy.shape[3]), dtype=x.dtype)
    for s in prange(x.shape[0]):
        _conv3x3_grad_sample(x, dy, arg, out, p, part[s], s)
    _sum_partials(part, dwt, db)


def relu_pool_conv3x3_weight_grad(x, dy, arg, out, p: int, dwt, db) -> None:
    """Backward of ``conv3x3_bias_relu_pool`` for a layer whose input needs no gradient:
    dwt (9, O), db (O,) from dy (N, Ho//2, Wo//2, O). Cell q of a window gets g = dy where q is
    the window's argmax and the pooled output is > 0, else 0, and adds g times its 9 taps: the
    three zero cells are multiplied through, as the GEMM ``dz^T @ cols`` would (the work the
    FLOP count says). Per-sample partials in x's dtype (Ho*Wo terms at most), summed over the
    batch in float64."""
    K.by_threads(relu_pool_conv3x3_weight_grad_ser, relu_pool_conv3x3_weight_grad_par)(x, dy, arg, out, p, dwt, db)


# ---------------------------------------------------------------------- the GEMMs (named, so profiles split them)
def gemm_forward(cols, wm, z) -> None:
    """z (N*Ho*Wo, O) = cols (N*Ho*Wo, k*k*C) @ wm.T: already NHWC."""
    np.matmul(cols, wm.T, out=z)


def gemm_weight_grad(cols, dz):
    """dW (O, k*k*C) = dz^T @ cols (the reduction runs over N*Ho*Wo)."""
    return dz.T @ cols


def gemm_input_grad(dz, wm, dcols) -> None:
    """dcols (N*Ho*Wo, k*k*C) = dz (N*Ho*Wo, O) @ wm (O, k*k*C)."""
    np.matmul(dz, wm, out=dcols)


# ---------------------------------------------------------------------- the block
def _geometry(layer, x_shape):
    n, h, w, c = x_shape
    k = layer.kernel
    p = k // 2 if layer.padding == "same" else 0
    return n, h, w, c, k, p, h + 2 * p - k + 1, w + 2 * p - k + 1


def _chunk_buffer(ws: Workspace, key, parts, rows_per_sample: int, width: int, dtype) -> np.ndarray:
    """(rows of the largest chunk, width): one buffer every chunk of the block reuses."""
    most = max(s1 - s0 for s0, s1 in parts)
    return ws.get(key, (most * rows_per_sample, width), dtype)


def forward(model, i: int, x, ws: Workspace):
    """conv layer i + relu + 2x2 pool: x (N, H, W, C) -> (pooled (N, Ho//2, Wo//2, O), Cache).
    im2col, the GEMM and ``bias_relu_pool`` run chunk by chunk (``chunks``) through
    chunk-sized ``cols`` and ``z`` buffers."""
    wm, b = model.w[f"{i}.W"], model.w[f"{i}.b"]
    n, h, w, c, k, p, ho, wo = _geometry(model.layers[i], x.shape)
    o = wm.shape[0]
    out = ws.get((i, "out"), (n, ho // 2, wo // 2, o), x.dtype)
    arg = ws.get((i, "arg"), out.shape, np.int8)
    if direct(model.layers[i], x.shape, model.need_dx[i]):
        conv3x3_bias_relu_pool(x, np.ascontiguousarray(wm.T), b, p, out, arg)  # wm.T: (9, O)
        return out, Cache(x, (n, ho, wo, o), arg, out, direct=True)
    if uses_winograd(model.layers[i], x.shape):
        return _winograd_forward(model, i, x, ws, out, arg)
    parts = chunks(n, ho * wo * k * k * c * x.itemsize)
    cols = _chunk_buffer(ws, (i, "cols"), parts, ho * wo, k * k * c, x.dtype)
    z = _chunk_buffer(ws, (i, "z"), parts, ho * wo, o, x.dtype)
    for s0, s1 in parts:
        rows = (s1 - s0) * ho * wo
        K.im2col(x[s0:s1], k, p, cols[:rows])
        gemm_forward(cols[:rows], wm, z[:rows])
        bias_relu_pool(z[:rows].reshape(s1 - s0, ho, wo, o), b, out[s0:s1], arg[s0:s1])
    cache = Cache(x, (n, ho, wo, o), arg, out, parts=parts)
    ws.holds[(i, "cols")] = cache  # cols still holds the last chunk's columns
    return out, cache


def backward(model, i: int, cache: Cache, dy, grads: dict, ws: Workspace):
    """Gradients of the block at conv layer i from dy (N, Ho//2, Wo//2, O): fills grads,
    returns dx (N, H, W, C), or None for the first parameter layer. Chunk by chunk
    (``chunks``, the forward's, last first): ``pool_relu_grad_bias`` writes the chunk's dz,
    im2col runs again (not for the forward's last chunk while ``cols`` still holds it: at more
    than one thread the whole batch), dW += dz^T @ cols, then dcols = dz @ W over the spent
    cols and ``col2im_into`` into the chunk's samples of dx. db is summed in float64; dW is
    the GEMM's own result for one chunk, the chunks' results added into the first's for more
    (in the GEMM's dtype: a float64 sum of a list of them took 0.36 ms of a 2-thread shard's
    15 ms, for 3-5 terms of similar size)."""
    n, ho, wo, o = cache.z_shape
    x = cache.x
    if cache.direct:
        dwt = np.empty((9, o), dtype=dy.dtype)
        db = np.empty(o, dtype=dy.dtype)
        p = _geometry(model.layers[i], x.shape)[5]
        relu_pool_conv3x3_weight_grad(x, np.ascontiguousarray(dy), cache.arg, cache.out, p, dwt, db)
        grads[f"{i}.b"], grads[f"{i}.W"] = db, np.ascontiguousarray(dwt.T)  # (9, O) -> (O, 9)
        return None
    if cache.wino is not None:
        return _winograd_backward(model, i, cache, np.ascontiguousarray(dy), grads, ws)
    wm = model.w[f"{i}.W"]
    _, _, _, c, k, p, _, _ = _geometry(model.layers[i], x.shape)
    need_dx = model.need_dx[i]
    dx = ws.get((i, "dx"), x.shape, dy.dtype) if need_dx else None
    dy = np.ascontiguousarray(dy)
    parts = cache.parts
    cols = _chunk_buffer(ws, (i, "cols"), parts, ho * wo, k * k * c, x.dtype)
    dz = _chunk_buffer(ws, (i, "dz"), parts, ho * wo, o, x.dtype)
    dw, db = None, np.zeros(o, dtype=np.float64)
    fresh = ws.holds.pop((i, "cols"), None) is cache  # its last chunk's columns are still there
    for s0, s1 in reversed(parts):  # the last chunk first: its columns need no im2col if fresh
        rows = (s1 - s0) * ho * wo
        pool_relu_grad_bias(dy[s0:s1], cache.arg[s0:s1], cache.out[s0:s1], dz[:rows].reshape(s1 - s0, ho, wo, o), db)
        if not fresh:
            K.im2col(x[s0:s1], k, p, cols[:rows])
        fresh = False
        part = gemm_weight_grad(cols[:rows], dz[:rows])  # a fresh array
        if dw is None:
            dw = part
        else:
            dw += part
        if need_dx:
            gemm_input_grad(dz[:rows], wm, cols[:rows])  # dcols over the spent cols, still in cache
            K.col2im_into(cols[:rows], k, p, dx[s0:s1])
    grads[f"{i}.b"] = db.astype(dy.dtype)
    grads[f"{i}.W"] = dw
    return dx


# ---------------------------------------------------------------------- the Winograd block
def _planes_buffer(ws: Workspace, key, rows: int, width: int, dtype) -> np.ndarray:
    """The workspace's planes for 16 (rows, width) matrices (``winograd.plane_buffer``)."""
    return ws.get(key, (16, winograd.plane_stride(rows * width, np.dtype(dtype).itemsize)), dtype)


def _winograd_forward(model, i: int, x, ws: Workspace, out, arg):
    """``forward`` for a Winograd block: U once, then chunk by chunk V (kept for the backward),
    the 16 GEMMs into a chunk-sized M, and the output transform fused with bias, relu and pool."""
    wm, b = model.w[f"{i}.W"], model.w[f"{i}.b"]
    n, h, w, c = x.shape
    o, t = wm.shape[0], winograd.tiles(x.shape)
    u = _planes_buffer(ws, (i, "u"), o, c, x.dtype)  # U transposed: (O, C) planes
    winograd.weight_transform(wm, c, u)
    parts = chunks(n, 16 * t * max(c, o) * x.itemsize * CHUNK_BYTES // WINOGRAD_CHUNK_BYTES)
    v = _planes_buffer(ws, (i, "v"), n * t, c, x.dtype)
    m = _planes_buffer(ws, (i, "m"), max(s1 - s0 for s0, s1 in parts) * t, o, x.dtype)
    for s0, s1 in parts:
        rows = (s1 - s0) * t
        winograd.input_transform(x[s0:s1], v, s0 * t)
        winograd.gemm_forward(
            winograd.planes(v, s0 * t, rows, c), winograd.planes(u, 0, o, c), winograd.planes(m, 0, rows, o)
        )
        winograd.output_bias_relu_pool(m, b, out[s0:s1], arg[s0:s1])
    return out, Cache(x, (n, h, w, o), arg, out, parts=parts, wino=(v, u))


def _winograd_backward(model, i: int, cache: Cache, dy, grads: dict, ws: Workspace):
    """``backward`` for a Winograd block, chunk by chunk (the forward's, last first): dM from
    the pool's gradient (over the forward's spent M), dU += V^T dM, and unless the layer is the
    first dV = dM U^T and its transform into the chunk's samples of dx; then dW = G^T dU G."""
    v, u = cache.wino
    x = cache.x
    n, h, w, c = x.shape
    o, t = cache.z_shape[3], winograd.tiles(x.shape)
    most = max(s1 - s0 for s0, s1 in cache.parts) * t
    dm = _planes_buffer(ws, (i, "m"), most, o, x.dtype)
    du, part = (_planes_buffer(ws, (i, key), o, c, x.dtype) for key in ("du", "du_part"))  # dU^T
    dv = _planes_buffer(ws, (i, "dv"), most, c, x.dtype) if model.need_dx[i] else None
    dx = ws.get((i, "dx"), x.shape, dy.dtype) if model.need_dx[i] else None
    db = np.zeros(o, dtype=np.float64)
    for k, (s0, s1) in enumerate(reversed(cache.parts)):
        rows = (s1 - s0) * t
        winograd.pool_grad_bias(dy[s0:s1], cache.arg[s0:s1], cache.out[s0:s1], dm, db)
        dmv = winograd.planes(dm, 0, rows, o)
        winograd.gemm_weight_grad(winograd.planes(v, s0 * t, rows, c), dmv, winograd.planes(part if k else du, 0, o, c))
        if k:
            winograd.planes(du, 0, o, c)[:] += winograd.planes(part, 0, o, c)
        if dx is not None:
            winograd.gemm_input_grad(dmv, winograd.planes(u, 0, o, c), winograd.planes(dv, 0, rows, c))
            winograd.input_grad_transform(dv, dx[s0:s1])
    dw = np.empty((o, 9 * c), dtype=x.dtype)  # a fresh array: callers keep gradients
    winograd.weight_grad_transform(du, c, dw)
    grads[f"{i}.b"] = db.astype(dy.dtype)
    grads[f"{i}.W"] = dw
    return dx


def performed_flops(model, batch: int) -> dict[str, int]:
    """``spec.flops(batch)`` with each Winograd block's convolution as it is performed: its 16
    GEMMs (``winograd.performed_flops``) forward, for the weight gradient and, unless the layer
    is the first, for the input gradient, in place of the direct count (2 * 9 * C * O per
    output), plus the transforms' operations per tile: input 32 * C, output 24 * O (bias, relu
    and pool stay counted as the spec counts them), dM 16 * O, dX 48 * C. The weight transforms
    (about 30 * C * O a step, under 0.3 % of the cnn's step) are left out."""
    spec = model.spec
    fl = dict(spec.flops(batch))
    for i, (layer, shape) in enumerate(zip(spec.layers, spec.input_shapes(), strict=True)):
        if not fusable(spec.layers, i):
            continue
        c, h, w = shape
        x_shape, o = (batch, h, w, c), layer.filters
        if direct(layer, x_shape, model.need_dx[i]) or not uses_winograd(layer, x_shape):
            continue
        gemm, t = winograd.performed_flops(c, o, h, w), winograd.tiles(x_shape)
        direct_mm = 2 * 9 * c * o * h * w
        fl["forward"] += batch * (gemm + t * (32 * c + 24 * o) - direct_mm)
        fl["backward"] += batch * (gemm + 16 * t * o - direct_mm)
        if model.need_dx[i]:
            fl["backward"] += batch * (gemm + 48 * t * c - direct_mm)
    fl["train_step"] = fl["forward"] + fl["backward"] + fl["update"]
    return fl
