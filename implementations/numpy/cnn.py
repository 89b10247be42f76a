"""Convolution (im2col + GEMM) and 2x2 max-pooling, for NumPy and CuPy alike.

Internal layout is NHWC: the im2col matrix is built with its columns ordered
``(kh, kw, C)`` so each kernel offset copies one contiguous slab, and the GEMM output
``(N*H*W, O)`` already *is* NHWC, with no transpose. The model converts NCHW <-> NHWC only
at its input and at ``flatten``. The loops below run over the kh*kw kernel offsets (9
for 3x3), never over samples or pixels.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .mlp import array_module


def conv_weight_in(w):
    """Canonical (O, C, kh, kw) -> GEMM layout (O, kh*kw*C), columns ordered (kh, kw, C)."""
    o = w.shape[0]
    return w.transpose(0, 2, 3, 1).reshape(o, -1).copy()


def conv_weight_out(wm, c: int, k: int):
    """GEMM layout (O, kh*kw*C) -> canonical (O, C, kh, kw)."""
    o = wm.shape[0]
    return wm.reshape(o, k, k, c).transpose(0, 3, 1, 2)


def _pad(x, p: int):
    if p == 0:
        return x
    xp = array_module(x)
    return xp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))


def im2col(x, k: int, padding: str):
    """(N, H, W, C) -> cols (N*Ho*Wo, k*k*C), Ho/Wo per padding (stride 1)."""
    xp = array_module(x)
    n, h, w, c = x.shape
    p = k // 2 if padding == "same" else 0
    xpad = _pad(x, p)
    ho, wo = h + 2 * p - k + 1, w + 2 * p - k + 1
    cols = xp.empty((n, ho, wo, k, k, c), dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, :, :, i, j, :] = xpad[:, i : i + ho, j : j + wo, :]
    return cols.reshape(n * ho * wo, k * k * c), (n, ho, wo)


def col2im(dcols, x_shape, k: int, padding: str):
    """Adjoint of ``im2col``: scatter-add (N*Ho*Wo, k*k*C) back to (N, H, W, C). (The NumPy
    model's backward uses ``input_grad``; this is the CuPy kernels' twin.)"""
    xp = array_module(dcols)
    n, h, w, c = x_shape
    p = k // 2 if padding == "same" else 0
    ho, wo = h + 2 * p - k + 1, w + 2 * p - k + 1
    d = dcols.reshape(n, ho, wo, k, k, c)
    dxpad = xp.zeros((n, h + 2 * p, w + 2 * p, c), dtype=dcols.dtype)
    for i in range(k):
        for j in range(k):
            dxpad[:, i : i + ho, j : j + wo, :] += d[:, :, :, i, j, :]
    return dxpad[:, p : p + h, p : p + w, :] if p else dxpad


def input_grad(dy2, wm, x_shape, k: int, padding: str):
    """dx (N, H, W, C) of a convolution from dy2 (N*Ho*Wo, O): col2im fused into one GEMM per
    kernel offset, ``dxpad[:, i:i+Ho, j:j+Wo] += dy2 @ W[:, (i, j), :]``, each product a
    contiguous (N*Ho*Wo, C) block, so the (N*Ho*Wo, k*k*C) matrix of the plain adjoint is never
    formed nor read back strided (5.0 -> 3.7 ms on the cnn's second conv at batch 50)."""
    xp = array_module(dy2)
    n, h, w, c = x_shape
    p = k // 2 if padding == "same" else 0
    ho, wo = h + 2 * p - k + 1, w + 2 * p - k + 1
    wk = wm.reshape(wm.shape[0], k * k, c)  # (O, k*k, C): offset (i, j) is wk[:, i*k + j]
    dxpad = xp.zeros((n, h + 2 * p, w + 2 * p, c), dtype=dy2.dtype)
    for i in range(k):
        for j in range(k):
            dxpad[:, i : i + ho, j : j + wo, :] += (dy2 @ wk[:, i * k + j, :]).reshape(n, ho, wo, c)
    return dxpad[:, p : p + h, p : p + w, :] if p else dxpad


def conv_forward(x, wm, b, k: int, padding: str):
    """(N, H, W, C) -> (N, Ho, Wo, O); returns (out, cols) with cols kept for backward."""
    cols, (n, ho, wo) = im2col(x, k, padding)
    out = cols @ wm.T  # (N*Ho*Wo, O)
    out += b  # in place: no second (N*Ho*Wo, O) array
    return out.reshape(n, ho, wo, -1), cols


def conv_backward(cols, x_shape, wm, dy, k: int, padding: str, need_dx: bool = True):
    """dy (N, Ho, Wo, O) -> (dx (N, H, W, C) or None, dwm (O, k*k*C), db (O,))."""
    o = dy.shape[-1]
    dy2 = dy.reshape(-1, o)  # (N*Ho*Wo, O)
    dwm = dy2.T @ cols
    db = dy2.sum(axis=0)
    dx = input_grad(dy2, wm, x_shape, k, padding) if need_dx else None
    return dx, dwm, db


# The four cells of each 2x2 window, in row-major window order (argmax 0..3).
_CELLS = ((0, 0), (0, 1), (1, 0), (1, 1))


def _cell(x, k: int, ho: int, wo: int):
    """Strided view (N, Ho, Wo, C) of cell ``k`` of every window (floored rows/cols dropped)."""
    i, j = _CELLS[k]
    return x[:, i : 2 * ho : 2, j : 2 * wo : 2, :]


def maxpool_forward(x):
    """2x2, stride 2, floor: (N, H, W, C) -> (N, H//2, W//2, C) and the argmax (0..3, int8)
    of each window, from four strided views (no window tensor is materialised). The first
    maximum in row-major window order wins (as in PyTorch); a NaN wins, as in ``np.argmax``.

    The argmax is bit arithmetic on three comparisons, not a search: within each row the right
    cell wins only when strictly greater, and the bottom row only when its maximum is strictly
    greater than the top row's, so ties go to the earlier cell; ``arg = 2 * bottom + right``
    of the winning row. (Three ``copyto(where=cell == out)`` passes took 4.2 of 5.0 ms on the
    cnn's first pool at batch 50; this takes 1.1 ms in all.) NaN windows are redone exactly below."""
    xp = array_module(x)
    ho, wo = x.shape[1] // 2, x.shape[2] // 2
    cells = [_cell(x, k, ho, wo) for k in range(4)]  # each (N, Ho, Wo, C), strided
    top, bottom = xp.maximum(cells[0], cells[1]), xp.maximum(cells[2], cells[3])
    out = xp.maximum(top, bottom)  # NaN propagates
    right_top, right = xp.greater(cells[1], cells[0]), xp.greater(cells[3], cells[2])  # bool
    low = xp.greater(bottom, top)
    xp.bitwise_xor(right_top, right, out=right)
    right &= low
    right ^= right_top  # the winning row's "right cell wins" bit
    arg = low.view(xp.int8)
    arg += arg
    arg |= right.view(xp.int8)
    nan = xp.isnan(out)
    if nan.any():  # rare: the first NaN cell of the window is its argmax
        arg[nan] = xp.stack([xp.isnan(c) for c in cells], axis=-1)[nan].argmax(axis=-1)
    return out, arg


def maxpool_backward(arg, x_shape, dy):
    """Routes each output gradient to its window's argmax; floored rows/cols get zero."""
    xp = array_module(dy)
    dx = xp.zeros(x_shape, dtype=dy.dtype)
    ho, wo = arg.shape[1], arg.shape[2]
    for k in range(4):
        _cell(dx, k, ho, wo)[...] = dy * (arg == k)
    return dx


class ReluPoolCache(NamedTuple):
    """What ``relu_pool_backward`` needs (kept at the relu layer; the pool keeps None)."""

    arg: Any
    out: Any
    x_shape: tuple


def relu_pool_forward(x):
    """relu then 2x2 max-pool, computed as pool then relu: equal values and routing (relu is
    monotone; a window whose maximum is <= 0 gets zero gradient either way) with the relu on
    the 4x smaller pooled tensor. Returns (out, cache)."""
    xp = array_module(x)
    pooled, arg = maxpool_forward(x)
    out = xp.maximum(pooled, 0)
    return out, ReluPoolCache(arg, out, x.shape)


def relu_pool_backward(cache: ReluPoolCache, dy):
    """Backward of ``relu_pool_forward``: relu's mask applied at pooled resolution, then routed."""
    return maxpool_backward(cache.arg, cache.x_shape, dy * (cache.out > 0))
