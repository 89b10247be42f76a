"""Fused conv -> relu -> 2x2 max-pool blocks for the Numba backend, with reused buffers.

Forward: im2col (Numba) into a preallocated ``cols``, one GEMM (NumPy BLAS) into a
preallocated ``z``, then ``bias_relu_pool``: bias + relu + 2x2 max-pool + argmax in one
pass over ``z`` (the full-resolution relu output is never written). Backward:
``pool_relu_grad_bias`` writes the conv's pre-activation gradient ``dz`` in one pass
(each window's argmax cell gets ``dy`` where the pooled output is > 0, the three other
cells and the floored rows/columns get 0) and the bias gradient with it; then
``dW = dz^T @ cols`` and, unless the layer is the first, ``dcols = dz @ W`` and the
gather-form ``col2im_into`` (each input pixel sums its k*k taps: no zeroing pass, no
scatter). Every buffer whose size scales with the batch is allocated once per (layer,
shape) in a ``Workspace`` and reused across steps; gradients are fresh arrays (callers keep
them). The general path (``model._param_forward`` etc.) handles every other pattern.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import kernels as K


def fusable(layers, i: int) -> bool:
    """Layer i is a conv followed by relu and a 2x2 max-pool (any padding, kernel, size)."""
    if i + 2 >= len(layers):
        return False
    conv, act, pool = layers[i], layers[i + 1], layers[i + 2]
    return conv.type == "conv2d" and act.type == "relu" and pool.type == "maxpool2d" and pool.size == 2


class Workspace:
    """Arrays reused across steps, one per (key, shape, dtype)."""

    def __init__(self):
        self.arrays: dict = {}

    def get(self, key, shape: tuple, dtype) -> np.ndarray:
        a = self.arrays.get(key)
        if a is None or a.shape != shape or a.dtype != dtype:
            a = self.arrays[key] = np.empty(shape, dtype=dtype)
        return a


class Cache:
    """What the fused block's backward needs (stored at the pool layer's index)."""

    __slots__ = ("cols", "x_shape", "z_shape", "arg", "out")

    def __init__(self, cols, x_shape, z_shape, arg, out):
        self.cols, self.x_shape, self.z_shape, self.arg, self.out = cols, x_shape, z_shape, arg, out


# ---------------------------------------------------------------------- kernels
@njit(parallel=True, cache=True)
def bias_relu_pool(z, b, out, arg):
    """z (N, H, W, O) conv output without bias -> out (N, H//2, W//2, O) = 2x2 max-pool
    (floor) of relu(z + b), arg (int8 0..3) = row-major window cell of the first maximum.
    NaN propagates as in the reference: relu keeps it and it wins the window (its first NaN)."""
    n, h, w, o = z.shape
    ho, wo = h // 2, w // 2
    one = K._one(z)
    zero = one - one
    for s in prange(n):
        for yy in range(ho):
            for xx in range(wo):
                for c in range(o):
                    v = z[s, 2 * yy, 2 * xx, c] + b[c]
                    best = zero if v < zero else v
                    a = 0
                    for q in range(1, 4):
                        v = z[s, 2 * yy + q // 2, 2 * xx + q % 2, c] + b[c]
                        v = zero if v < zero else v
                        if v > best or (v != v and best == best):
                            best, a = v, q
                    out[s, yy, xx, c] = best
                    arg[s, yy, xx, c] = a


@njit(parallel=True, cache=True)
def pool_relu_grad_bias(dy, arg, out, dz, db):
    """Backward of ``bias_relu_pool``: dz (N, H, W, O) = dy routed to each window's argmax
    cell where out > 0, else 0 (floored rows/cols too); db = sum of dz (float64 partials)."""
    n, ho, wo, o = dy.shape
    h, w = dz.shape[1], dz.shape[2]
    one = K._one(dz)
    zero = one - one
    part = np.zeros((n, o), dtype=np.float64)
    for s in prange(n):
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
    for c in range(o):
        acc = 0.0
        for s in range(n):
            acc += part[s, c]
        db[c] = acc


@njit(parallel=True, cache=True)
def col2im_into(dcols, k, p, dx):
    """Adjoint of ``kernels.im2col`` written as a gather: dx (N, H, W, C)[y, x] = sum over
    the k*k taps (i, j) of dcols[row of output (y - i + p, x - j + p), tap (i, j)]."""
    n, h, w, c = dx.shape
    ho, wo = h + 2 * p - k + 1, w + 2 * p - k + 1
    for s in prange(n):
        for yy in range(h):
            for xx in range(w):
                for ch in range(c):
                    dx[s, yy, xx, ch] = 0
                for i in range(k):
                    oy = yy - i + p
                    if oy < 0 or oy >= ho:
                        continue
                    for j in range(k):
                        ox = xx - j + p
                        if ox < 0 or ox >= wo:
                            continue
                        r = (s * ho + oy) * wo + ox
                        base = (i * k + j) * c
                        for ch in range(c):
                            dx[s, yy, xx, ch] += dcols[r, base + ch]


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


def forward(model, i: int, x, ws: Workspace):
    """conv layer i + relu + 2x2 pool: x (N, H, W, C) -> (pooled (N, Ho//2, Wo//2, O), Cache)."""
    wm, b = model.w[f"{i}.W"], model.w[f"{i}.b"]
    n, h, w, c, k, p, ho, wo = _geometry(model.layers[i], x.shape)
    o = wm.shape[0]
    cols = ws.get((i, "cols"), (n * ho * wo, k * k * c), x.dtype)
    K.im2col(x, k, p, cols)
    z = ws.get((i, "z"), (n * ho * wo, o), x.dtype)
    gemm_forward(cols, wm, z)
    out = ws.get((i, "out"), (n, ho // 2, wo // 2, o), x.dtype)
    arg = ws.get((i, "arg"), out.shape, np.int8)
    bias_relu_pool(z.reshape(n, ho, wo, o), b, out, arg)
    return out, Cache(cols, x.shape, (n, ho, wo, o), arg, out)


def backward(model, i: int, cache: Cache, dy, grads: dict, ws: Workspace):
    """Gradients of the block at conv layer i from dy (N, Ho//2, Wo//2, O): fills grads,
    returns dx (N, H, W, C), or None for the first parameter layer."""
    n, ho, wo, o = cache.z_shape
    dz = ws.get((i, "dz"), (n * ho * wo, o), dy.dtype)
    db = np.empty(o, dtype=dy.dtype)
    pool_relu_grad_bias(np.ascontiguousarray(dy), cache.arg, cache.out, dz.reshape(cache.z_shape), db)
    grads[f"{i}.b"] = db
    grads[f"{i}.W"] = gemm_weight_grad(cache.cols, dz)
    if not model.need_dx[i]:
        return None
    wm = model.w[f"{i}.W"]
    _, _, _, _, k, p, _, _ = _geometry(model.layers[i], cache.x_shape)
    dcols = ws.get((i, "dcols"), cache.cols.shape, dy.dtype)
    gemm_input_grad(dz, wm, dcols)
    dx = ws.get((i, "dx"), cache.x_shape, dy.dtype)
    col2im_into(dcols, k, p, dx)
    return dx
