"""Layer kernels on plain Python lists (standard library only).

A batch is a list of ``N`` flat per-sample lists; images are flat in HWC order
(``(h * W + w) * C + c``) so that one kernel row of a conv patch is one contiguous slice.
Every inner product is ``sum(map(mul, a, b))``; ``dots(v, rows)`` maps that over a
matrix's rows without a Python-level loop, so the hot paths run almost entirely in C.
The math mirrors ``implementations.numpy`` (inverted dropout, first-max-wins pooling, fused
softmax + cross-entropy); sigmoid is ``0.5 * tanh(x / 2) + 0.5`` here, since ``math.exp``
raises OverflowError where NumPy's ``exp`` returns inf (float64: equal to ~1e-16).
"""

from __future__ import annotations

import time
from itertools import repeat
from math import exp, log, sqrt, tanh
from operator import add, mul, sub

Rows = list[list[float]]


def dots(v, rows):
    """Iterator of ``sum(map(mul, v, r))`` for every row ``r`` (no Python loop per row)."""
    return map(sum, map(map, repeat(mul), repeat(v), rows))


def transpose(rows) -> list:
    """Transposed copy made of *fresh* float objects (``v * 1.0``, exact), allocated in
    the new row order: a plain ``zip(*rows)`` would keep pointers to floats scattered in
    the old order, and the dot products over them run ~1.5x slower (cache misses)."""
    return [tuple(map(mul, col, repeat(1.0))) for col in zip(*rows, strict=False)]


def axpy_rows(w: Rows, g: Rows, lr: float) -> Rows:
    """``w - lr * g`` row by row (new rows; the caller rebinds)."""
    return [list(map(sub, wr, map(mul, gr, repeat(lr)))) for wr, gr in zip(w, g, strict=False)]


def axpy(w: list[float], g: list[float], lr: float) -> list[float]:
    return list(map(sub, w, map(mul, g, repeat(lr))))


def adam(w: list[float], g: list[float], m: list[float], v: list[float], alpha: float, hp: tuple):
    """Keras' Adam on one flat list (see ``implementations.optim``): returns new
    ``(w, m, v)``; ``hp`` is ``(beta_1, beta_2, epsilon)``."""
    b1, b2, eps = hp
    m = [mi + (gi - mi) * (1.0 - b1) for mi, gi in zip(m, g, strict=True)]
    v = [vi + (gi * gi - vi) * (1.0 - b2) for vi, gi in zip(v, g, strict=True)]
    w = [wi - (alpha * mi) / (sqrt(vi) + eps) for wi, mi, vi in zip(w, m, v, strict=True)]
    return w, m, v


# ---------------------------------------------------------------------- dense
def dense_forward(x: Rows, wt: Rows, b: list[float]) -> Rows:
    """(N, in) x (out rows of in) + b -> (N, out); ``wt`` is W transposed, so each output
    is one long dot product."""
    return [list(map(add, dots(xn, wt), b)) for xn in x]


def dense_backward(x: Rows, w: Rows, dy: Rows, need_dx: bool):
    """Returns (dx (N, in) or None, dWT (out, in), db (out,)). ``dWT`` rows are dots of
    length N over the transposed batch; ``dx`` uses W's (in, out) rows."""
    xt = transpose(x)  # (in, N)
    dyt = transpose(dy)  # (out, N)
    dwt = [list(dots(dyj, xt)) for dyj in dyt]
    db = [sum(dyj) for dyj in dyt]
    dx = [list(dots(dyn, w)) for dyn in dy] if need_dx else None
    return dx, dwt, db


# ---------------------------------------------------------------------- activations
def act_forward(kind: str, x: Rows) -> Rows:
    if kind == "sigmoid":
        return [[tanh(v * 0.5) * 0.5 + 0.5 for v in r] for r in x]
    if kind == "relu":
        return [[v if v > 0.0 else 0.0 for v in r] for r in x]
    if kind == "tanh":
        return [list(map(tanh, r)) for r in x]
    raise ValueError(kind)


def act_backward(kind: str, out: Rows, dy: Rows) -> Rows:
    """Gradient through an activation from its output."""
    if kind == "sigmoid":
        return [[g * o * (1.0 - o) for g, o in zip(gr, orow, strict=False)] for gr, orow in zip(dy, out, strict=False)]
    if kind == "relu":
        return [
            [g if o > 0.0 else 0.0 for g, o in zip(gr, orow, strict=False)] for gr, orow in zip(dy, out, strict=False)
        ]
    if kind == "tanh":
        return [[g * (1.0 - o * o) for g, o in zip(gr, orow, strict=False)] for gr, orow in zip(dy, out, strict=False)]
    raise ValueError(kind)


# ---------------------------------------------------------------------- softmax and losses
def softmax(z: Rows) -> Rows:
    out = []
    for r in z:
        m = max(r)
        e = [exp(v - m) for v in r]
        s = sum(e)
        out.append([v / s for v in e])
    return out


def softmax_backward(p: Rows, dp: Rows) -> Rows:
    """p * (dp - sum(dp * p)) per row."""
    out = []
    for pr, gr in zip(p, dp, strict=False):
        s = sum(map(mul, gr, pr))
        out.append([pv * (g - s) for pv, g in zip(pr, gr, strict=False)])
    return out


def mse(out: Rows, y: Rows) -> tuple[float, Rows]:
    """Mean over all N*K elements; returns (loss, d loss / d out)."""
    diff = [list(map(sub, o, t)) for o, t in zip(out, y, strict=False)]
    size = len(out) * len(out[0])
    loss = sum(sum(map(mul, d, d)) for d in diff) / size
    scale = 2.0 / size
    return loss, [[v * scale for v in d] for d in diff]


def cross_entropy_from_logits(z: Rows, y: Rows) -> tuple[float, Rows]:
    """Softmax fused with CE: (mean -sum(y log p), d loss / d z = (p - y) / N)."""
    n = len(z)
    inv = 1.0 / n
    total = 0.0
    dz = []
    for r, t in zip(z, y, strict=False):
        m = max(r)
        s = [v - m for v in r]
        lse = log(sum(map(exp, s)))
        logp = [v - lse for v in s]
        total -= sum(map(mul, t, logp))
        dz.append([(exp(lp) - tv) * inv for lp, tv in zip(logp, t, strict=False)])
    return total / n, dz


# ---------------------------------------------------------------------- dropout
def dropout_mask(rnd, n: int, width: int, rate: float) -> Rows:
    """Inverted dropout: keep with probability 1 - rate, kept units scaled by 1/(1-rate)."""
    scale = 1.0 / (1.0 - rate)
    return [[scale if rnd() >= rate else 0.0 for _ in range(width)] for _ in range(n)]


def mul_rows(x: Rows, m: Rows) -> Rows:
    return [list(map(mul, a, b)) for a, b in zip(x, m, strict=False)]


# ---------------------------------------------------------------------- conv2d (HWC flat)
def _pad(xn: list[float], h: int, w: int, c: int, p: int) -> list[float]:
    if p == 0:
        return xn
    wp = w + 2 * p
    side = [0.0] * (p * c)
    out = [0.0] * (p * wp * c)
    rc = w * c
    for i in range(h):
        out += side
        out += xn[i * rc : (i + 1) * rc]
        out += side
    out += [0.0] * (p * wp * c)
    return out


def conv_geometry(shape: tuple[int, int, int], k: int, padding: str):
    """(h, w, c) -> (p, hp, wp, ho, wo) for a stride-1 conv."""
    h, w, c = shape
    p = k // 2 if padding == "same" else 0
    hp, wp = h + 2 * p, w + 2 * p
    return p, hp, wp, hp - k + 1, wp - k + 1


def conv_forward(x: Rows, shape, wm: Rows, b: list[float], k: int, padding: str):
    """HWC (N, h*w*c) -> (N, ho*wo*O). Each output pixel's patch (columns ordered
    (kh, kw, C), k contiguous slices) is dotted with every filter row of ``wm`` (O, k*k*C).
    Returns (out, cols) with cols (N*ho*wo patches) kept for backward."""
    h, w, c = shape
    p, hp, wp, ho, wo = conv_geometry(shape, k, padding)
    kc, rs = k * c, wp * c
    offs = [i * rs for i in range(k)]
    out, cols = [], []
    for xn in x:
        xpad = _pad(xn, h, w, c, p)
        on: list[float] = []
        for yy in range(ho):
            for xx in range(wo):
                s = yy * rs + xx * c
                patch: list[float] = []
                for o in offs:
                    patch += xpad[s + o : s + o + kc]
                cols.append(patch)
                on += map(add, dots(patch, wm), b)
        out.append(on)
    return out, cols


def conv_backward(cols: Rows, shape, wmt: Rows, dy: Rows, k: int, padding: str, need_dx: bool):
    """dy (N, ho*wo*O) -> (dx HWC or None, dWm (O, k*k*C), db (O,)). dWm rows are long dots
    over every (sample, pixel); dx is dcols = dy_pixel . WmT rows, scattered back (col2im)."""
    o = len(wmt[0])
    rows = [dyn[q : q + o] for dyn in dy for q in range(0, len(dyn), o)]  # (N*ho*wo, O)
    dyt = transpose(rows)  # (O, M)
    colst = transpose(cols)  # (K, M)
    dwm = [list(dots(dyo, colst)) for dyo in dyt]
    db = [sum(dyo) for dyo in dyt]
    if not need_dx:
        return None, dwm, db
    return _col2im(rows, wmt, shape, k, padding, len(dy)), dwm, db


def _col2im(rows: Rows, wmt: Rows, shape, k: int, padding: str, n: int) -> Rows:
    h, w, c = shape
    p, hp, wp, ho, wo = conv_geometry(shape, k, padding)
    kc, rs = k * c, wp * c
    offs = [i * rs for i in range(k)]
    dx = []
    it = iter(rows)
    for _ in range(n):
        dpad = [0.0] * (hp * rs)
        for yy in range(ho):
            for xx in range(wo):
                dcol = list(dots(next(it), wmt))  # (k*k*C,)
                s = yy * rs + xx * c
                for i, o in enumerate(offs):
                    a = s + o
                    dpad[a : a + kc] = map(add, dpad[a : a + kc], dcol[i * kc : (i + 1) * kc])
        if p:
            rc = w * c
            dpad = [v for i in range(h) for v in dpad[(i + p) * rs + p * c : (i + p) * rs + p * c + rc]]
        dx.append(dpad)
    return dx


# ---------------------------------------------------------------------- maxpool 2x2 (HWC flat)
def maxpool_forward(x: Rows, shape):
    """2x2 stride 2, floor. Returns (out, arg) where arg holds the flat input index of each
    window's maximum (row-major window order, first maximum wins)."""
    h, w, c = shape
    ho, wo, rs = h // 2, w // 2, w * c
    out, args = [], []
    for xn in x:
        on: list[float] = []
        an: list[int] = []
        for yy in range(ho):
            for xx in range(wo):
                base = 2 * yy * rs + 2 * xx * c
                for i0 in range(base, base + c):
                    best, bi = xn[i0], i0
                    for j in (i0 + c, i0 + rs, i0 + rs + c):
                        if xn[j] > best:
                            best, bi = xn[j], j
                    on.append(best)
                    an.append(bi)
        out.append(on)
        args.append(an)
    return out, args


def maxpool_backward(args, size: int, dy: Rows) -> Rows:
    """Routes each output gradient to its window's argmax (windows do not overlap)."""
    dx = []
    for an, gn in zip(args, dy, strict=False):
        d = [0.0] * size
        for i, g in zip(an, gn, strict=False):
            d[i] = g
        dx.append(d)
    return dx


# ---------------------------------------------------------------------- flatten
def hwc_to_chw_perm(shape) -> list[int]:
    """perm[f] = HWC index of canonical CHW feature f."""
    h, w, c = shape
    return [(yy * w + xx) * c + ch for ch in range(c) for yy in range(h) for xx in range(w)]


def permute(x: Rows, perm: list[int]) -> Rows:
    return [list(map(xn.__getitem__, perm)) for xn in x]


# ---------------------------------------------------------------------- baseline
def dot_rate(seconds: float = 1.0, length: int = 800, rows: int = 800) -> float:
    """Multiply-adds per second of ``[sum(map(mul, w, x)) for w in W]`` (plain loop)."""
    import random

    rnd = random.Random(0).random
    x = [rnd() for _ in range(length)]
    wmat = [[rnd() for _ in range(length)] for _ in range(rows)]
    done, t0 = 0, time.perf_counter()
    while True:
        [sum(map(mul, wr, x)) for wr in wmat]
        done += 1
        dt = time.perf_counter() - t0
        if dt >= seconds:
            return done * rows * length / dt
