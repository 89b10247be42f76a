"""Convolution (im2col + GEMM) and 2x2 max-pooling, for NumPy and CuPy alike.

Internal layout is NHWC: the im2col matrix is built with its columns ordered
``(kh, kw, C)`` so each kernel offset copies one contiguous slab, and the GEMM output
``(N*H*W, O)`` already *is* NHWC, with no transpose. The model converts NCHW <-> NHWC only
at its input and at ``flatten``. The loops below run over the kh*kw kernel offsets (9
for 3x3), never over samples or pixels.
"""

from __future__ import annotations

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
    """Adjoint of ``im2col``: scatter-add (N*Ho*Wo, k*k*C) back to (N, H, W, C)."""
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


def conv_forward(x, wm, b, k: int, padding: str):
    """(N, H, W, C) -> (N, Ho, Wo, O); returns (out, cols) with cols kept for backward."""
    cols, (n, ho, wo) = im2col(x, k, padding)
    out = cols @ wm.T + b  # (N*Ho*Wo, O)
    return out.reshape(n, ho, wo, -1), cols


def conv_backward(cols, x_shape, wm, dy, k: int, padding: str, need_dx: bool = True):
    """dy (N, Ho, Wo, O) -> (dx (N, H, W, C) or None, dwm (O, k*k*C), db (O,))."""
    o = dy.shape[-1]
    dy2 = dy.reshape(-1, o)  # (N*Ho*Wo, O)
    dwm = dy2.T @ cols
    db = dy2.sum(axis=0)
    dx = col2im(dy2 @ wm, x_shape, k, padding) if need_dx else None
    return dx, dwm, db


def maxpool_forward(x):
    """2x2, stride 2, floor: (N, H, W, C) -> (N, H//2, W//2, C) and the argmax (0..3) of
    each window in row-major window order (the first maximum wins, as in PyTorch)."""
    n, h, w, c = x.shape
    ho, wo = h // 2, w // 2
    win = x[:, : 2 * ho, : 2 * wo, :].reshape(n, ho, 2, wo, 2, c)
    win = win.transpose(0, 1, 3, 5, 2, 4).reshape(n, ho, wo, c, 4)
    arg = win.argmax(axis=-1)
    xp = array_module(x)
    out = xp.take_along_axis(win, arg[..., None], axis=-1)[..., 0]
    return out, arg


def maxpool_backward(arg, x_shape, dy):
    """Routes each output gradient to its window's argmax; floored rows/cols get zero."""
    xp = array_module(dy)
    n, h, w, c = x_shape
    ho, wo = h // 2, w // 2
    hit = arg[..., None] == xp.arange(4)  # (N, Ho, Wo, C, 4)
    dwin = (hit * dy[..., None]).astype(dy.dtype)
    dwin = dwin.reshape(n, ho, wo, c, 2, 2).transpose(0, 1, 4, 2, 5, 3)  # (N, Ho, 2, Wo, 2, C)
    if h == 2 * ho and w == 2 * wo:
        return dwin.reshape(n, h, w, c)
    dx = xp.zeros(x_shape, dtype=dy.dtype)
    dx[:, : 2 * ho, : 2 * wo, :] = dwin.reshape(n, 2 * ho, 2 * wo, c)
    return dx
