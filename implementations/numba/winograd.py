"""Winograd F(2x2, 3x3) for the fused 3x3 'same' conv -> relu -> 2x2 max-pool block.

Each 2x2 pool window is one Winograd tile: its four conv outputs come from the 4x4 input patch
``xp[2ty:2ty+4, 2tx:2tx+4]`` (``xp`` the input with its one-pixel zero border) as
``Y = A^T [(G g G^T) * (B^T d B)] A``: the 16 elementwise products become 16 GEMMs
``M[p] (tiles, O) = V[p] (tiles, C) @ U[p] (C, O)`` with ``V = B^T d B`` (``input_transform``)
and ``U = G g G^T`` (``weight_transform``). A conv output's floored row or column (odd H or W)
belongs to no window, is never pooled and is not computed (its gradient is zero). Per output the
GEMMs perform 16 * C multiply-adds per tile of 4 outputs, against 9 * C each directly: 2.25x
fewer (``performed_flops`` counts them). The backward is the forward's exact adjoint:
``dM = A dY A^T`` (one cell of each tile's dY is nonzero: the argmax), ``dU[p] = V[p]^T @ dM[p]``
and ``dV[p] = dM[p] @ U[p]^T`` (the same GEMM shapes), ``dW = G^T dU G`` and ``dX`` the sum of
each tile's ``B dV B^T`` over the tiles that read the pixel.

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

(Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2015.) Every coefficient is
0, +-1 or +-1/2, so a transform adds and halves and rounds no more than a 4-term sum; float32
results differ from the direct sums by a few ulps of the largest term.

Layout: x and dx (N, H, W, C) NHWC; weights (O, 9 * C) in im2col's (kh, kw, C) order. The 16
matrices of V, dV (rows, C), M, dM (rows, O) and U, dU (stored transposed: (O, C), the weights'
own order) are *planes*: a (16, stride) array, matrix p = 4a + b row-major in plane p
(``V[p, r * C + c]``; tile row ``r = s * T + ty * Tw + tx``, T = Th * Tw = (H // 2) * (W // 2)),
the stride padded (``plane_stride``) so that the 16 planes do not fall on one cache set;
``planes`` views rows of them as (16, rows, width) for the GEMMs. Kernels index planes with
unsigned integers: a computed signed index gets Numba's negative-index wraparound, which kept
LLVM from vectorising the output transform (246 against 33 us a chunk). Every kernel is a
per-sample body with a serial ``nogil`` and a parallel twin (``K.by_threads``), vectorised over
channels.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import kernels as K


def applies(layer, x_shape: tuple) -> bool:
    """A 3x3 'same' conv whose output has at least one 2x2 pool window."""
    return layer.kernel == 3 and layer.padding == "same" and x_shape[1] >= 2 and x_shape[2] >= 2


def tiles(x_shape: tuple) -> int:
    """Tiles (= pool windows) per sample."""
    return (x_shape[1] // 2) * (x_shape[2] // 2)


def performed_flops(c: int, o: int, h: int, w: int) -> int:
    """FLOPs one sample's forward GEMMs perform (the backward's two GEMMs perform as many each)."""
    return 2 * 16 * (h // 2) * (w // 2) * c * o


def plane_stride(elements: int, itemsize: int) -> int:
    """Elements from one plane to the next: ``elements`` rounded up to whole 4 KiB, plus 320
    bytes, so the 16 planes start 320 bytes apart modulo 4 KiB. With a stride a multiple of
    4 KiB a kernel's 16 streams (element i of every plane) fall on one set of the 8-way L1
    and evict each other: the 64 -> 128 channel weight transform took 46 ns a (c, o) pair
    with planes of 64 * 128 float32 (32 KiB) and 4.7 ns with 63 * 128 (1 thread, Zen 4)."""
    page = 4096 // itemsize
    return -(-elements // page) * page + 320 // itemsize


def plane_buffer(rows: int, width: int, dtype) -> np.ndarray:
    """Planes for 16 (rows, width) matrices."""
    dtype = np.dtype(dtype)
    return np.empty((16, plane_stride(rows * width, dtype.itemsize)), dtype=dtype)


def planes(buf: np.ndarray, r0: int, rows: int, width: int) -> np.ndarray:
    """Rows r0 : r0 + rows of the 16 matrices in ``buf`` as a (16, rows, width) view."""
    return buf[:, r0 * width : (r0 + rows) * width].reshape(16, rows, width)  # a view (the test checks)


# ---------------------------------------------------------------------- weights
@njit(cache=True, inline="always")
def _half(a):
    """1/2 in ``a``'s dtype (a float32 kernel stays float32)."""
    one = K._one(a)
    return one / (one + one)


@njit(cache=True, inline="always")
def _g_row(g0, g1, g2, half):
    """G applied to three values: (g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2)."""
    return g0, (g0 + g1 + g2) * half, (g0 - g1 + g2) * half, g2


@njit(cache=True, inline="always")
def _gt_row(m0, m1, m2, m3, half):
    """G^T applied to four values: (m0 + (m1 + m2) / 2, (m1 - m2) / 2, (m1 + m2) / 2 + m3)."""
    return m0 + (m1 + m2) * half, (m1 - m2) * half, (m1 + m2) * half + m3


@njit(cache=True, inline="always")
def _at(base, k):
    """Plane index ``base + k``, unsigned (no wraparound; see the module's docstring)."""
    return np.uint64(base) + np.uint64(k)


@njit(cache=True, nogil=True)
def weight_transform(wm, c, ut):
    """ut (planes of 16 (O, C)) = (G g G^T)^T for every (o, c), g = wm[o] (9 * C, (kh, kw, C))
    as 3x3: both along c, so the loop is vectorised."""
    half = _half(wm)
    for o in range(wm.shape[0]):
        base = o * c
        for ch in range(c):
            i = _at(base, ch)
            t00, t10, t20, t30 = _g_row(wm[o, ch], wm[o, 3 * c + ch], wm[o, 6 * c + ch], half)  # G g, column 0
            t01, t11, t21, t31 = _g_row(wm[o, c + ch], wm[o, 4 * c + ch], wm[o, 7 * c + ch], half)
            t02, t12, t22, t32 = _g_row(wm[o, 2 * c + ch], wm[o, 5 * c + ch], wm[o, 8 * c + ch], half)
            ut[0, i], ut[1, i], ut[2, i], ut[3, i] = _g_row(t00, t01, t02, half)  # (G g) G^T
            ut[4, i], ut[5, i], ut[6, i], ut[7, i] = _g_row(t10, t11, t12, half)
            ut[8, i], ut[9, i], ut[10, i], ut[11, i] = _g_row(t20, t21, t22, half)
            ut[12, i], ut[13, i], ut[14, i], ut[15, i] = _g_row(t30, t31, t32, half)


@njit(cache=True, nogil=True)
def weight_grad_transform(dut, c, dw):
    """dw (O, 9 * C) = G^T du G for every (o, c), dut planes of 16 (O, C): the adjoint of
    ``weight_transform``, along c."""
    half = _half(dut)
    for o in range(dw.shape[0]):
        base = o * c
        for ch in range(c):
            i = _at(base, ch)
            t00, t10, t20 = _gt_row(dut[0, i], dut[4, i], dut[8, i], dut[12, i], half)  # G^T du
            t01, t11, t21 = _gt_row(dut[1, i], dut[5, i], dut[9, i], dut[13, i], half)
            t02, t12, t22 = _gt_row(dut[2, i], dut[6, i], dut[10, i], dut[14, i], half)
            t03, t13, t23 = _gt_row(dut[3, i], dut[7, i], dut[11, i], dut[15, i], half)
            dw[o, ch], dw[o, c + ch], dw[o, 2 * c + ch] = _gt_row(t00, t01, t02, t03, half)  # (G^T du) G
            dw[o, 3 * c + ch], dw[o, 4 * c + ch], dw[o, 5 * c + ch] = _gt_row(t10, t11, t12, t13, half)
            dw[o, 6 * c + ch], dw[o, 7 * c + ch], dw[o, 8 * c + ch] = _gt_row(t20, t21, t22, t23, half)


# ---------------------------------------------------------------------- input transform
@njit(cache=True)
def _bordered(x, s, xp):
    """xp (H + 2, W + 2, C) = sample s of x inside a zero border."""
    h, w = x.shape[1], x.shape[2]
    xp[:] = 0
    for yy in range(h):
        for xx in range(w):
            for ch in range(x.shape[3]):
                xp[yy + 1, xx + 1, ch] = x[s, yy, xx, ch]


@njit(cache=True, inline="always")
def _bt_row(d0, d1, d2, d3):
    """B^T applied to four values: (d0 - d2, d1 + d2, d2 - d1, d1 - d3)."""
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


@njit(cache=True, inline="always")
def _bt_patch_row(xp, y, z, ch):
    """B^T applied to xp[y, z:z + 4, ch]."""
    return _bt_row(xp[y, z, ch], xp[y, z + 1, ch], xp[y, z + 2, ch], xp[y, z + 3, ch])


@njit(cache=True)
def _input_sample(x, s, xp, v, r0):
    _bordered(x, s, xp)
    c = x.shape[3]
    th, tw = x.shape[1] // 2, x.shape[2] // 2
    for ty in range(th):
        for tx in range(tw):
            base = (r0 + (s * th + ty) * tw + tx) * c
            y, z = 2 * ty, 2 * tx
            for ch in range(c):
                i = _at(base, ch)
                # each input row's B^T (along the columns), then B^T down the four results
                a0, a1, a2, a3 = _bt_patch_row(xp, y, z, ch)
                b0, b1, b2, b3 = _bt_patch_row(xp, y + 1, z, ch)
                c0, c1, c2, c3 = _bt_patch_row(xp, y + 2, z, ch)
                d0, d1, d2, d3 = _bt_patch_row(xp, y + 3, z, ch)
                v[0, i], v[4, i], v[8, i], v[12, i] = _bt_row(a0, b0, c0, d0)
                v[1, i], v[5, i], v[9, i], v[13, i] = _bt_row(a1, b1, c1, d1)
                v[2, i], v[6, i], v[10, i], v[14, i] = _bt_row(a2, b2, c2, d2)
                v[3, i], v[7, i], v[11, i], v[15, i] = _bt_row(a3, b3, c3, d3)


@njit(cache=True, nogil=True)
def input_transform_ser(x, v, r0):
    xp = np.empty((x.shape[1] + 2, x.shape[2] + 2, x.shape[3]), dtype=x.dtype)
    for s in range(x.shape[0]):
        _input_sample(x, s, xp, v, r0)


@njit(parallel=True, cache=True)
def input_transform_par(x, v, r0):
    for s in prange(x.shape[0]):
        xp = np.empty((x.shape[1] + 2, x.shape[2] + 2, x.shape[3]), dtype=x.dtype)
        _input_sample(x, s, xp, v, r0)


def input_transform(x, v, r0: int = 0) -> None:
    """v (planes of 16 (rows, C)), rows r0.. = B^T d B of every tile's 4x4 input patch d (zero
    outside x (N, H, W, C))."""
    K.by_threads(input_transform_ser, input_transform_par)(x, v, r0)


# ---------------------------------------------------------------------- output transform + bias + relu + pool
@njit(cache=True, inline="always")
def _at_row(m0, m1, m2, m3):
    """A^T applied to four values: (m0 + m1 + m2, m1 - m2 - m3)."""
    return m0 + m1 + m2, m1 - m2 - m3


@njit(cache=True)
def _output_sample(m, b, out, arg, s):
    one = K._one(m)
    zero = one - one
    th, tw, o = out.shape[1], out.shape[2], out.shape[3]
    for ty in range(th):
        for tx in range(tw):
            base = ((s * th + ty) * tw + tx) * o
            for c in range(o):
                i = _at(base, c)
                p0, q0 = _at_row(m[0, i], m[1, i], m[2, i], m[3, i])  # row a of M A
                p1, q1 = _at_row(m[4, i], m[5, i], m[6, i], m[7, i])
                p2, q2 = _at_row(m[8, i], m[9, i], m[10, i], m[11, i])
                p3, q3 = _at_row(m[12, i], m[13, i], m[14, i], m[15, i])
                y00, y10 = _at_row(p0, p1, p2, p3)  # A^T down the columns
                y01, y11 = _at_row(q0, q1, q2, q3)
                best, a = K.relu_max(y00 + b[c], zero, 0, y01 + b[c], 1)
                best, a = K.relu_max(best, zero, a, y10 + b[c], 2)
                best, a = K.relu_max(best, zero, a, y11 + b[c], 3)
                out[s, ty, tx, c] = best
                arg[s, ty, tx, c] = a


@njit(cache=True, nogil=True)
def output_bias_relu_pool_ser(m, b, out, arg):
    for s in range(out.shape[0]):
        _output_sample(m, b, out, arg, s)


@njit(parallel=True, cache=True)
def output_bias_relu_pool_par(m, b, out, arg):
    for s in prange(out.shape[0]):
        _output_sample(m, b, out, arg, s)


def output_bias_relu_pool(m, b, out, arg) -> None:
    """m (planes of 16 (N * T, O)) -> out (N, H // 2, W // 2, O) = 2x2 max-pool of
    relu(A^T m A + b) per tile, arg the window cell, as ``conv_pool.bias_relu_pool`` defines
    them (a tie to the first cell, a NaN wins)."""
    K.by_threads(output_bias_relu_pool_ser, output_bias_relu_pool_par)(m, b, out, arg)


# ---------------------------------------------------------------------- pool backward -> dM
@njit(cache=True)
def _pool_grad_sample(dy, arg, out, dm, part, s):
    one = K._one(dm)
    zero = one - one
    th, tw, o = dy.shape[1], dy.shape[2], dy.shape[3]
    for ty in range(th):
        for tx in range(tw):
            base = ((s * th + ty) * tw + tx) * o
            for c in range(o):
                i = _at(base, c)
                g = dy[s, ty, tx, c] if out[s, ty, tx, c] > zero else zero
                q = arg[s, ty, tx, c]
                part[s, c] += g
                top, left = q < 2, (q % 2) == 0
                # dM = A dY A^T with dY = g at cell q: (column q // 2 of A^T) g (row q % 2 of A^T)
                r0, r2, r3 = (g if top else zero), (g if top else -g), (zero if top else -g)
                c0, c2, c3 = (one if left else zero), (one if left else -one), (zero if left else -one)
                dm[0, i], dm[1, i], dm[2, i], dm[3, i] = r0 * c0, r0, r0 * c2, r0 * c3
                dm[4, i], dm[5, i], dm[6, i], dm[7, i] = g * c0, g, g * c2, g * c3
                dm[8, i], dm[9, i], dm[10, i], dm[11, i] = r2 * c0, r2, r2 * c2, r2 * c3
                dm[12, i], dm[13, i], dm[14, i], dm[15, i] = r3 * c0, r3, r3 * c2, r3 * c3


@njit(cache=True, nogil=True)
def pool_grad_bias_ser(dy, arg, out, dm, db):
    part = np.zeros((dy.shape[0], dy.shape[3]), dtype=np.float64)
    for s in range(dy.shape[0]):
        _pool_grad_sample(dy, arg, out, dm, part, s)
    K.add_sample_sums(part, db)


@njit(parallel=True, cache=True)
def pool_grad_bias_par(dy, arg, out, dm, db):
    part = np.zeros((dy.shape[0], dy.shape[3]), dtype=np.float64)
    for s in prange(dy.shape[0]):
        _pool_grad_sample(dy, arg, out, dm, part, s)
    K.add_sample_sums(part, db)


def pool_grad_bias(dy, arg, out, dm, db) -> None:
    """Backward of ``output_bias_relu_pool``: dm (planes of 16 (N * T, O)) = A dY A^T of each
    tile's dY (dy at the argmax cell where out > 0, else 0); adds the sum of dY to db
    (float64, so a batch run chunk by chunk sums as one)."""
    K.by_threads(pool_grad_bias_ser, pool_grad_bias_par)(dy, arg, out, dm, db)


# ---------------------------------------------------------------------- dV -> dX
@njit(cache=True, inline="always")
def _b_row(v0, v1, v2, v3):
    """B applied to four values (B^T's adjoint): (v0, v1 - v2 + v3, v1 + v2 - v0, -v3)."""
    return v0, v1 - v2 + v3, v1 + v2 - v0, -v3


@njit(cache=True, inline="always")
def _add4(xp, y, z, ch, e):
    """xp[y, z:z + 4, ch] += e (four values)."""
    xp[y, z, ch] += e[0]
    xp[y, z + 1, ch] += e[1]
    xp[y, z + 2, ch] += e[2]
    xp[y, z + 3, ch] += e[3]


@njit(cache=True)
def _dx_sample(dv, s, xp, dx):
    h, w, c = dx.shape[1], dx.shape[2], dx.shape[3]
    th, tw = h // 2, w // 2
    xp[:] = 0
    for ty in range(th):
        for tx in range(tw):
            base = ((s * th + ty) * tw + tx) * c
            y, z = 2 * ty, 2 * tx
            for ch in range(c):
                i = _at(base, ch)
                a0, a1, a2, a3 = _b_row(dv[0, i], dv[4, i], dv[8, i], dv[12, i])  # B down column b = 0
                b0, b1, b2, b3 = _b_row(dv[1, i], dv[5, i], dv[9, i], dv[13, i])
                c0, c1, c2, c3 = _b_row(dv[2, i], dv[6, i], dv[10, i], dv[14, i])
                d0, d1, d2, d3 = _b_row(dv[3, i], dv[7, i], dv[11, i], dv[15, i])
                _add4(xp, y, z, ch, _b_row(a0, b0, c0, d0))  # then along each patch row
                _add4(xp, y + 1, z, ch, _b_row(a1, b1, c1, d1))
                _add4(xp, y + 2, z, ch, _b_row(a2, b2, c2, d2))
                _add4(xp, y + 3, z, ch, _b_row(a3, b3, c3, d3))
    for yy in range(h):
        for xx in range(w):
            for ch in range(c):
                dx[s, yy, xx, ch] = xp[yy + 1, xx + 1, ch]


@njit(cache=True, nogil=True)
def input_grad_transform_ser(dv, dx):
    xp = np.empty((dx.shape[1] + 2, dx.shape[2] + 2, dx.shape[3]), dtype=dx.dtype)
    for s in range(dx.shape[0]):
        _dx_sample(dv, s, xp, dx)


@njit(parallel=True, cache=True)
def input_grad_transform_par(dv, dx):
    for s in prange(dx.shape[0]):
        xp = np.empty((dx.shape[1] + 2, dx.shape[2] + 2, dx.shape[3]), dtype=dx.dtype)
        _dx_sample(dv, s, xp, dx)


def input_grad_transform(dv, dx) -> None:
    """dx (N, H, W, C) = the sum over the tiles reading each pixel of B dV B^T, dv planes of
    16 (N * T, C): the adjoint of ``input_transform`` (the border's share dropped)."""
    K.by_threads(input_grad_transform_ser, input_grad_transform_par)(dv, dx)


# ---------------------------------------------------------------------- the GEMMs (named, so profiles split them)
def gemm_forward(v, ut, m) -> None:
    """m[p] (rows, O) = v[p] (rows, C) @ ut[p]^T (ut[p]: (O, C)), p = 0..15 (``planes`` views)."""
    np.matmul(v, ut.transpose(0, 2, 1), out=m)


def gemm_weight_grad(v, dm, dut) -> None:
    """dut[p] (O, C) = dm[p]^T @ v[p] (the reduction runs over the tiles)."""
    np.matmul(dm.transpose(0, 2, 1), v, out=dut)


def gemm_input_grad(dm, ut, dv) -> None:
    """dv[p] (rows, C) = dm[p] (rows, O) @ ut[p]."""
    np.matmul(dm, ut, out=dv)
