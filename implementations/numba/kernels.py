"""Numba kernels (``@njit(cache=True)``), generic over float32/float64 by specialisation.

Layout is NHWC like the NumPy reference; im2col columns are ordered ``(kh, kw, C)`` and
conv weights are ``(O, kh*kw*C)``. ``parallel=True`` kernels split the batch (or the
flattened elements) over threads with ``prange``; each sample is written by one thread,
so there are no races. GEMMs are *not* in here: ``np.dot`` inside ``njit`` needs SciPy's
BLAS bindings, which this project does not depend on, so the model calls NumPy's BLAS
between kernels (the same BLAS the reference uses). Fusions: bias + activation in one
pass (``bias_act``), activation gradient + bias gradient (``act_grad_bias``), dropout
mask drawn and applied in one pass.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import overload

# activation codes (data, not strings, so kernels specialise once)
NONE, SIGMOID, RELU, TANH = 0, 1, 2, 3
ACT_CODES = {"sigmoid": SIGMOID, "relu": RELU, "tanh": TANH}


PAR_MIN = 1 << 16  # elements below which a serial kernel beats a parallel launch


@njit(cache=True, inline="always")
def _one(a):
    """1 in ``a``'s dtype, so float32 kernels never promote to float64 through literals."""
    return np.ones(1, dtype=a.dtype)[0]


@njit(cache=True, inline="always")
def _act(v, code, one):
    """relu and tanh, one element (sigmoid goes by rows: ``_sigmoid_row``)."""
    if code == RELU:  # written so that a NaN stays NaN, as in the reference's maximum(x, 0)
        return one - one if v < 0 else v
    if code == TANH:
        return np.tanh(v)
    return v


@njit(cache=True, inline="always")
def _act_grad(o, g, code, one):
    """d act / d in times g, from the activation's output o."""
    if code == SIGMOID:
        return g * o * (one - o)
    if code == RELU:
        return g if o > 0 else one - one
    if code == TANH:
        return g * (one - o * o)
    return g


# ---------------------------------------------------------------------- the fused conv blocks' shared pieces
@njit(cache=True, inline="always")
def relu_max(best, zero, a, v, q):
    """(max, argmax) after cell q: relu(best) (a no-op after the first) against relu(v);
    the earlier cell keeps a tie, a NaN wins over numbers (the first NaN stays)."""
    best = zero if best < zero else best
    v = zero if v < zero else v
    take = (v > best) | ((v != v) & (best == best))  # bitwise: no branch, so it vectorises
    return (v if take else best), (q if take else a)


@njit(cache=True, inline="always")
def add_sample_sums(part, db):
    """db += the sum of part (N, O) over its samples, in float64."""
    for c in range(part.shape[1]):
        acc = 0.0
        for s in range(part.shape[0]):
            acc += part[s, c]
        db[c] += acc


# ---------------------------------------------------------------------- sigmoid rows
# A sigmoid layer is one row at a time: float32 rows take a vectorised exp (below), float64
# rows ``np.exp`` (LLVM calls libm's exp per element, which no loop vectorises).
def _sigmoid_row(y, b, r, out):
    """out[r] = 1 / (1 + exp(-(y[r] + b))), dispatched on the dtype (``_ol_sigmoid_row``)."""


def _sigmoid_row_libm(y, b, r, out):
    one = _one(y)
    for j in range(y.shape[1]):
        out[r, j] = one / (one + np.exp(-(y[r, j] + b[j])))


def _sigmoid_row_f32(y, b, r, out):
    """float32: exp(v) = 2^n exp(t), n = round(v / ln 2), t = v - n ln 2 in two parts
    (Cody-Waite), exp(t) by Cephes' expf polynomial; 2^n is built from its bits in an int32
    buffer viewed as float32 (a scalar cannot be bit-cast in a vector loop). Measured on
    a (50, 800) layer, 1 thread: 63 us against libm's 135-199 us; on 4e6 points in
    [-120, 120] the same max error as libm's (8.9e-8 absolute, 2.4 ulp). v is clamped to
    [-87, 89]: 2^-126 (smallest normal) below, 2^128 = inf above (sigmoid 0); a NaN
    stays NaN."""
    o = y.shape[1]
    e = np.empty(o, np.float32)
    bits = np.empty(o, np.int32)
    two_n = bits.view(np.float32)
    one = np.float32(1.0)
    for j in range(o):
        v = min(max(-(y[r, j] + b[j]), np.float32(-87.0)), np.float32(89.0))
        n = (v * np.float32(1.44269504088896341) + np.float32(12582912.0)) - np.float32(12582912.0)  # rint
        t = v - n * np.float32(0.693359375) + n * np.float32(2.12194440e-4)
        p = np.float32(1.9875691500e-4)
        p = p * t + np.float32(1.3981999507e-3)
        p = p * t + np.float32(8.3334519073e-3)
        p = p * t + np.float32(4.1665795894e-2)
        p = p * t + np.float32(1.6666665459e-1)
        p = p * t + np.float32(5.0000001201e-1)
        e[j] = p * t * t + t + one
        bits[j] = (np.int32(n) + np.int32(127)) << np.int32(23)
    for j in range(o):
        v = y[r, j] + b[j]
        s = one / (one + e[j] * two_n[j])
        out[r, j] = s if v == v else v


@overload(_sigmoid_row, jit_options={"fastmath": {"contract"}})
def _ol_sigmoid_row(y, b, r, out):
    return _sigmoid_row_f32 if y.dtype == types.float32 else _sigmoid_row_libm


# ---------------------------------------------------------------------- elementwise
# Each comes as a serial and a parallel kernel over rows; ``pick`` chooses by size.
@njit(cache=True, inline="always")
def _bias_act_row(y, b, r, code, one):
    if code == SIGMOID:
        _sigmoid_row(y, b, r, y)
        return
    for j in range(y.shape[1]):
        y[r, j] = _act(y[r, j] + b[j], code, one)


@njit(cache=True, nogil=True)
def bias_act_ser(y, b, code):
    """In place: y (M, O) <- act(y + b); ``code`` NONE is the plain bias add."""
    one = _one(y)
    for r in range(y.shape[0]):
        _bias_act_row(y, b, r, code, one)


@njit(parallel=True, cache=True)
def bias_act_par(y, b, code):
    one = _one(y)
    for r in prange(y.shape[0]):
        _bias_act_row(y, b, r, code, one)


@njit(cache=True, inline="always")
def _act_rows(x, out, r0, r1, code, one):
    if code == SIGMOID:
        zero_bias = np.zeros(x.shape[1], x.dtype)
        for r in range(r0, r1):
            _sigmoid_row(x, zero_bias, r, out)
        return
    for r in range(r0, r1):
        for j in range(x.shape[1]):
            out[r, j] = _act(x[r, j], code, one)


@njit(cache=True, nogil=True)
def act_forward_ser(x, code, out):
    """out = act(x) for (M, K) arrays (an activation that follows no parameter layer)."""
    _act_rows(x, out, 0, x.shape[0], code, _one(x))


@njit(parallel=True, cache=True)
def act_forward_par(x, code, out):
    one = _one(x)
    for r in prange(x.shape[0]):
        _act_rows(x, out, r, r + 1, code, one)


@njit(cache=True, inline="always")
def _grad_rows(out, dy, dz, r0, r1, code, one, acc):
    """dz = act'(out) * dy on rows r0..r1, column sums added into acc."""
    for r in range(r0, r1):
        for j in range(dy.shape[1]):
            v = _act_grad(out[r, j], dy[r, j], code, one)
            dz[r, j] = v
            acc[j] += v


@njit(cache=True, nogil=True)
def act_grad_bias_ser(out, dy, code, dz, db):
    """Fused: dz = act'(out) * dy for (M, O) arrays (``code`` NONE copies) and
    db = column sums of dz (accumulated in float64)."""
    acc = np.zeros(dy.shape[1], dtype=np.float64)
    _grad_rows(out, dy, dz, 0, dy.shape[0], code, _one(dy), acc)
    db[:] = acc


@njit(parallel=True, cache=True)
def act_grad_bias_par(out, dy, code, dz, db):
    """As the serial one; rows split in chunks, each with its own partial sums."""
    m, o = dy.shape
    nch = min(m, 64)
    part = np.zeros((nch, o), dtype=np.float64)
    one = _one(dy)
    for t in prange(nch):
        acc = np.zeros(o, dtype=np.float64)
        _grad_rows(out, dy, dz, t * m // nch, (t + 1) * m // nch, code, one, acc)
        part[t, :] = acc
    db[:] = part.sum(axis=0)


@njit(cache=True, nogil=True)
def sgd_ser(w, g, lr):
    """In place w -= lr * g (C-contiguous, any shape; lr in w's dtype)."""
    wf, gf = w.reshape(-1), g.reshape(-1)
    for i in range(wf.size):
        wf[i] -= lr * gf[i]


@njit(parallel=True, cache=True)
def sgd_par(w, g, lr):
    wf, gf = w.reshape(-1), g.reshape(-1)
    for i in prange(wf.size):
        wf[i] -= lr * gf[i]


_HERE = threading.local()  # .serial: this Python thread runs serial kernels only (``serial_here``)


@contextlib.contextmanager
def serial_here() -> Iterator[None]:
    """Inside, this Python thread calls only serial twins (``by_threads``, ``pick``): a
    data-parallel shard (``shards``), or a model at one thread (which so skips asking Numba
    its thread count, ~9 us, at every kernel call)."""
    before = getattr(_HERE, "serial", False)
    _HERE.serial = True
    try:
        yield
    finally:
        _HERE.serial = before


def serial_thread() -> None:
    """This Python thread, for the rest of its life, calls only serial twins (a shard thread)."""
    _HERE.serial = True


def runs_serial() -> bool:
    """This Python thread runs serial kernels: inside ``serial_here``, or Numba at one thread."""
    return getattr(_HERE, "serial", False) or numba.get_num_threads() == 1


def by_threads(ser, par):
    """The serial twin where this thread ``runs_serial``, else the parallel kernel. A shard
    thread must never reach a parallel kernel: the ``workqueue`` layer may not be entered from
    two threads at once; the serial twins release the GIL, so the shards run side by side."""
    return ser if runs_serial() else par


def pick(ser, par, a):
    """The serial kernel for small arrays or a single thread, the parallel one otherwise. At one
    thread a ``prange`` loop still pays the launch and loses the vector loop (measured, 1
    pinned thread, data in cache: the MLP's (50, 800) dropout 124 -> 42 us, ``sgd`` on a
    (784, 800) float32 weight 130 -> 87 us; inside an MLP step, where the weights come from
    memory, the two ``sgd`` kernels are within noise: 0.46 + 0.01 against 0.51 ms a step)."""
    return by_threads(ser, par) if a.size >= PAR_MIN else ser


def bias_act(y, b, code: int) -> None:
    pick(bias_act_ser, bias_act_par, y)(y, b, code)


def act_forward(x, code: int):
    x2 = x.reshape(x.shape[0], -1)
    out = np.empty_like(x2)
    pick(act_forward_ser, act_forward_par, x2)(x2, code, out)
    return out.reshape(x.shape)


def act_backward(out, dy, code: int):
    """Gradient through an activation from its output (db discarded)."""
    o2, d2 = out.reshape(out.shape[0], -1), dy.reshape(dy.shape[0], -1)
    dz = np.empty_like(d2)
    act_grad_bias(o2, d2, code, dz, np.empty(d2.shape[1], dtype=d2.dtype))
    return dz.reshape(dy.shape)


def act_grad_bias(out, dy, code: int, dz, db) -> None:
    pick(act_grad_bias_ser, act_grad_bias_par, dy)(out, dy, code, dz, db)


def sgd(w, g, lr) -> None:
    pick(sgd_ser, sgd_par, w)(w, g, lr)


# ---------------------------------------------------------------------- dropout
@njit(cache=True, inline="always")
def _splitmix64(z):
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@njit(cache=True, inline="always")
def _dropout_at(i, off, base, thresh, scale, zero, xf, of, mf):
    """Element i (element i + off of the whole batch): u = top 24 bits of
    splitmix64(key + (i + off)), keep iff u >= rate * 2^24."""
    u = _splitmix64(base + np.uint64(i + off) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(40)
    mf[i] = scale if u >= thresh else zero
    of[i] = xf[i] * mf[i]


@njit(cache=True, inline="always")
def _dropout_consts(x, rate, key):
    one = _one(x)
    thresh = np.uint64(int(rate * 16777216.0))  # keep iff u24 >= rate * 2^24
    return np.uint64(key) * np.uint64(0x9E3779B97F4A7C15), thresh, one / (one - rate), one - one


@njit(cache=True, nogil=True)
def dropout_ser(x, rate, key, out, mask, off=0):
    """Counter-based uniforms (splitmix64 of key + index): the same mask whatever the thread
    count or the kernel (``dropout_par``). ``off``: the index of x's first element in the whole
    batch, so a shard of the batch draws the rows of the whole batch's mask."""
    base, thresh, scale, zero = _dropout_consts(x, rate, key)
    xf, of, mf = x.reshape(-1), out.reshape(-1), mask.reshape(-1)
    for i in range(xf.size):
        _dropout_at(i, off, base, thresh, scale, zero, xf, of, mf)


@njit(parallel=True, cache=True)
def dropout_par(x, rate, key, out, mask, off=0):
    base, thresh, scale, zero = _dropout_consts(x, rate, key)
    xf, of, mf = x.reshape(-1), out.reshape(-1), mask.reshape(-1)
    for i in prange(xf.size):
        _dropout_at(i, off, base, thresh, scale, zero, xf, of, mf)


def dropout_forward(x, rate: float, key: int, first_row: int = 0):
    """Inverted dropout (keep with probability 1 - rate, scale 1/(1 - rate)): (x * mask, mask).
    ``first_row``: x's first row in the whole batch (a shard's offset)."""
    x = np.ascontiguousarray(x)
    out, mask = np.empty_like(x), np.empty_like(x)
    off = first_row * (x.size // max(1, x.shape[0]))
    pick(dropout_ser, dropout_par, x)(x, x.dtype.type(rate), key, out, mask, off)
    return out, mask


# ---------------------------------------------------------------------- softmax and losses
@njit(cache=True, nogil=True)
def softmax(z):
    n, k = z.shape
    p = np.empty_like(z)
    for r in range(n):
        m = z[r].max()
        s = 0.0
        for j in range(k):
            p[r, j] = np.exp(z[r, j] - m)
            s += p[r, j]
        for j in range(k):
            p[r, j] /= s
    return p


@njit(cache=True, nogil=True)
def cross_entropy_from_logits(z, y, total_n):
    """Fused softmax + CE over these rows of a batch of ``total_n`` rows (all of it, or a
    shard): (sum_rows -sum(y log p) / total_n, dz = (p - y) / total_n), stable log-sum-exp.
    The shards' losses add up to the batch's mean, their dz are the batch's rows."""
    n, k = z.shape
    dz = np.empty_like(z)
    total = 0.0
    for r in range(n):
        m = z[r].max()
        s = 0.0
        for j in range(k):
            s += np.exp(z[r, j] - m)
        lse = np.log(s)
        for j in range(k):
            lp = z[r, j] - m - lse
            total -= y[r, j] * lp
            dz[r, j] = (np.exp(lp) - y[r, j]) / total_n
    return total / total_n, dz


@njit(cache=True, nogil=True)
def mse(out, y, total_n):
    """Mean over all elements of a batch of ``total_n`` rows, of which these are all or a shard:
    (sum of squares / (total_n * k), 2 (out - y) / (total_n * k))."""
    n, k = out.shape
    dout = np.empty_like(out)
    scale = 2.0 / (total_n * k)
    loss = 0.0
    for r in range(n):
        for j in range(k):
            d = out[r, j] - y[r, j]
            loss += d * d
            dout[r, j] = d * scale
    return loss / (total_n * k), dout


@njit(cache=True, nogil=True)
def softmax_backward(p, dp):
    n, k = p.shape
    dz = np.empty_like(p)
    for r in range(n):
        s = 0.0
        for j in range(k):
            s += dp[r, j] * p[r, j]
        for j in range(k):
            dz[r, j] = p[r, j] * (dp[r, j] - s)
    return dz


# ---------------------------------------------------------------------- conv: im2col / col2im
# Per-sample bodies, each run by a serial (``nogil``) and a parallel twin over the batch;
# ``by_threads`` chooses.
@njit(cache=True)
def _im2col_sample(x, k, p, cols, b):
    n, h, w, c = x.shape
    ho, wo = h + 2 * p - k + 1, w + 2 * p - k + 1
    for yy in range(ho):
        for xx in range(wo):
            r = (b * ho + yy) * wo + xx
            for i in range(k):
                sy = yy + i - p
                for j in range(k):
                    sx = xx + j - p
                    base = (i * k + j) * c
                    if 0 <= sy < h and 0 <= sx < w:
                        for ch in range(c):
                            cols[r, base + ch] = x[b, sy, sx, ch]
                    else:
                        for ch in range(c):
                            cols[r, base + ch] = 0


@njit(cache=True, nogil=True)
def im2col_ser(x, k, p, cols):
    for b in range(x.shape[0]):
        _im2col_sample(x, k, p, cols, b)


@njit(parallel=True, cache=True)
def im2col_par(x, k, p, cols):
    for b in prange(x.shape[0]):
        _im2col_sample(x, k, p, cols, b)


def im2col(x, k: int, p: int, cols) -> None:
    """x (N, H, W, C) -> cols (N*Ho*Wo, k*k*C), zero outside the padded border."""
    by_threads(im2col_ser, im2col_par)(x, k, p, cols)


@njit(cache=True)
def _col2im_gather_sample(dcols, k, p, dx, s):
    h, w, c = dx.shape[1], dx.shape[2], dx.shape[3]
    ho, wo = h + 2 * p - k + 1, w + 2 * p - k + 1
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


@njit(cache=True, nogil=True)
def col2im_into_ser(dcols, k, p, dx):
    for s in range(dx.shape[0]):
        _col2im_gather_sample(dcols, k, p, dx, s)


@njit(parallel=True, cache=True)
def col2im_into_par(dcols, k, p, dx):
    for s in prange(dx.shape[0]):
        _col2im_gather_sample(dcols, k, p, dx, s)


def col2im_into(dcols, k: int, p: int, dx) -> None:
    """Adjoint of ``kernels.im2col`` written as a gather: dx (N, H, W, C)[y, x] = sum over
    the k*k taps (i, j) of dcols[row of output (y - i + p, x - j + p), tap (i, j)]."""
    by_threads(col2im_into_ser, col2im_into_par)(dcols, k, p, dx)


def col2im(dcols, n: int, h: int, w: int, c: int, k: int, p: int):
    """Adjoint of ``im2col``: (N*Ho*Wo, k*k*C) summed back into a new dx (N, H, W, C)."""
    dx = np.empty((n, h, w, c), dtype=dcols.dtype)
    col2im_into(dcols, k, p, dx)
    return dx


@njit(parallel=True, cache=True)
def conv_direct_forward(x, w_hwio, b, k, p):
    """Direct-loop convolution (for the im2col comparison): x (N, H, W, C), w (k, k, C, O)."""
    n, h, wd, c = x.shape
    o = w_hwio.shape[3]
    ho, wo = h + 2 * p - k + 1, wd + 2 * p - k + 1
    out = np.empty((n, ho, wo, o), dtype=x.dtype)
    for bb in prange(n):
        for yy in range(ho):
            for xx in range(wo):
                acc = out[bb, yy, xx]
                acc[:] = b
                for i in range(k):
                    sy = yy + i - p
                    if sy < 0 or sy >= h:
                        continue
                    for j in range(k):
                        sx = xx + j - p
                        if sx < 0 or sx >= wd:
                            continue
                        for ch in range(c):
                            v = x[bb, sy, sx, ch]
                            for oo in range(o):
                                acc[oo] += v * w_hwio[i, j, ch, oo]
    return out


def conv_im2col_forward(x, wm, b, k: int, p: int):
    """im2col (Numba) + GEMM (NumPy BLAS) + bias (Numba): x (N, H, W, C) -> (N, Ho, Wo, O)."""
    n, h, w, c = x.shape
    ho, wo = h + 2 * p - k + 1, w + 2 * p - k + 1
    cols = np.empty((n * ho * wo, k * k * c), dtype=x.dtype)
    im2col(x, k, p, cols)
    y = cols @ wm.T
    bias_act(y, b, NONE)
    return y.reshape(n, ho, wo, -1)


# ---------------------------------------------------------------------- maxpool 2x2
@njit(cache=True)
def _maxpool_sample(x, out, arg, b):
    ho, wo, c = out.shape[1], out.shape[2], out.shape[3]
    for yy in range(ho):
        for xx in range(wo):
            for ch in range(c):
                best = x[b, 2 * yy, 2 * xx, ch]
                a = 0
                for q in range(1, 4):
                    v = x[b, 2 * yy + q // 2, 2 * xx + q % 2, ch]
                    if v > best or (v != v and best == best):
                        best, a = v, q
                out[b, yy, xx, ch] = best
                arg[b, yy, xx, ch] = a


@njit(cache=True, nogil=True)
def maxpool_forward_ser(x, out, arg):
    for b in range(x.shape[0]):
        _maxpool_sample(x, out, arg, b)


@njit(parallel=True, cache=True)
def maxpool_forward_par(x, out, arg):
    for b in prange(x.shape[0]):
        _maxpool_sample(x, out, arg, b)


def maxpool_forward(x):
    """2x2 stride 2 floor on (N, H, W, C): (out, arg) with arg 0..3 the window position
    (row-major) of the first maximum; a NaN wins over numbers (the first NaN), as in the reference."""
    n, h, w, c = x.shape
    out = np.empty((n, h // 2, w // 2, c), dtype=x.dtype)
    arg = np.empty(out.shape, dtype=np.int8)
    by_threads(maxpool_forward_ser, maxpool_forward_par)(x, out, arg)
    return out, arg


@njit(cache=True)
def _unpool_sample(arg, dy, dx, b):
    ho, wo, c = dy.shape[1], dy.shape[2], dy.shape[3]
    for yy in range(ho):
        for xx in range(wo):
            for ch in range(c):
                q = arg[b, yy, xx, ch]
                dx[b, 2 * yy + q // 2, 2 * xx + q % 2, ch] = dy[b, yy, xx, ch]


@njit(cache=True, nogil=True)
def maxpool_backward_ser(arg, dy, dx):
    for b in range(dy.shape[0]):
        _unpool_sample(arg, dy, dx, b)


@njit(parallel=True, cache=True)
def maxpool_backward_par(arg, dy, dx):
    for b in prange(dy.shape[0]):
        _unpool_sample(arg, dy, dx, b)


def maxpool_backward(arg, dy, h: int, w: int):
    """Route dy (N, Ho, Wo, C) to each window's argmax; floored rows/cols get zero."""
    dx = np.zeros((dy.shape[0], h, w, dy.shape[3]), dtype=dy.dtype)
    by_threads(maxpool_backward_ser, maxpool_backward_par)(arg, dy, dx)
    return dx
