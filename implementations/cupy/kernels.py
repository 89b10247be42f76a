"""The CuPy backend's GPU kernels, as a table with one NumPy twin per kernel.

Every fused operation is a method of a ``Kernels`` table; three providers implement it:

- ``"cuda"``: CuPy ``ElementwiseKernel`` / ``RawModule`` kernels compiled by NVRTC (GPU);
- ``"numpy"``: the twins, NumPy expressions doing the same operations in the same order
  (what the CPU tests run, with ``xp=numpy`` standing in for CuPy);
- ``"emulated"``: the *same CUDA source text* compiled for the CPU by the host C++ compiler,
  with one "thread" walking the whole grid-stride loop (tests only). It checks the CUDA
  source itself, index arithmetic included, without a GPU.

What is fused (one launch each, instead of the reference's chain of array ops):

- ``bias_act``: bias add + sigmoid / relu / tanh after a GEMM (dense and conv);
- ``act_backward``: activation gradient from its output, with the following dropout's mask
  multiply folded in when there is one (``dy * m * out * (1 - out)`` for sigmoid);
- ``dropout``: keep-mask from the uniforms + scale + apply, mask kept for backward;
- ``sgd``: ``w -= lr * g`` in place;
- raw kernels: 2x2 max-pool forward (first max wins, NaN propagates like ``argmax``) and
  backward (writes every window cell, so no zero fill unless rows/cols are floored);
  ``im2col`` with the zero padding folded in (no padded copy); ``col2im`` as a gather (no
  atomics; sums in the reference's kernel-offset order); the softmax head (softmax + MSE or
  cross-entropy + their gradient w.r.t. the logits, one thread per row).
"""

from __future__ import annotations

import ctypes
import functools
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from implementations.numpy import cnn, mlp

BLOCK = 256
MAX_GRID = 65535 * 32
CTYPES = {"float32": "float", "float64": "double"}


# ---------------------------------------------------------------------- elementwise
@dataclass(frozen=True)
class Elementwise:
    """One ``cupy.ElementwiseKernel``: every parameter has type ``T``; ``scalars`` are the
    inputs passed as Python floats; ``body`` is CUDA C; ``twin`` is the NumPy version."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    body: str
    twin: Callable
    scalars: tuple[str, ...] = ()


def _np_where(c, a, b):
    return np.where(c, a, b).astype(np.result_type(a), copy=False)


def _twin_dropout(x, u, rate, scale):
    m = np.where(u >= rate, x.dtype.type(scale), x.dtype.type(0))
    return x * m, m


def _twin_sgd(g, lr, w):
    w -= lr * g
    return w


ELEMENTWISE: dict[str, Elementwise] = {
    "bias_sigmoid": Elementwise(
        ("z", "b"), ("y",), "y = (T)1 / ((T)1 + exp(-(z + b)))", lambda z, b: mlp.sigmoid(z + b)
    ),
    "bias_relu": Elementwise(
        ("z", "b"), ("y",), "T v = z + b; y = v < (T)0 ? (T)0 : v", lambda z, b: np.maximum(z + b, 0)
    ),
    "bias_tanh": Elementwise(("z", "b"), ("y",), "y = tanh(z + b)", lambda z, b: np.tanh(z + b)),
    "sigmoid_backward": Elementwise(
        ("out", "dy"), ("dx",), "dx = dy * out * ((T)1 - out)", lambda out, dy: dy * out * (1 - out)
    ),
    "relu_backward": Elementwise(
        ("out", "dy"), ("dx",), "dx = out > (T)0 ? dy : (T)0", lambda out, dy: _np_where(out > 0, dy, 0)
    ),
    "tanh_backward": Elementwise(
        ("out", "dy"), ("dx",), "dx = dy * ((T)1 - out * out)", lambda out, dy: dy * (1 - out * out)
    ),
    "sigmoid_dropout_backward": Elementwise(
        ("out", "m", "dy"), ("dx",), "dx = dy * m * out * ((T)1 - out)", lambda out, m, dy: dy * m * out * (1 - out)
    ),
    "relu_dropout_backward": Elementwise(
        ("out", "m", "dy"), ("dx",), "dx = out > (T)0 ? dy * m : (T)0", lambda out, m, dy: _np_where(out > 0, dy * m, 0)
    ),
    "tanh_dropout_backward": Elementwise(
        ("out", "m", "dy"), ("dx",), "dx = dy * m * ((T)1 - out * out)", lambda out, m, dy: dy * m * (1 - out * out)
    ),
    "dropout": Elementwise(
        ("x", "u", "rate", "scale"), ("y", "m"), "m = u >= rate ? scale : (T)0; y = x * m", _twin_dropout,
        scalars=("rate", "scale"),
    ),
    "sgd": Elementwise(("g", "lr"), ("w",), "w -= lr * g", _twin_sgd, scalars=("lr",)),
}  # fmt: skip
INPLACE = {"sgd"}  # kernels whose outputs are passed in (updated in place)


# ---------------------------------------------------------------------- raw kernels
RAW_SOURCE = r"""
#define GRID_STRIDE(t, total) \
  for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < (total); \
       t += (long long)blockDim.x * gridDim.x)

// 2x2 stride-2 floor max-pool, NHWC. One thread per output; arg = 0..3 in row-major window
// order; the first maximum wins and a NaN wins over numbers (as numpy's argmax).
extern "C" __global__ void maxpool2x2_fwd(const T* x, T* y, signed char* arg, int n, int h, int w, int c) {
  const int ho = h / 2, wo = w / 2;
  const long long rowc = (long long)w * c;
  GRID_STRIDE(t, (long long)n * ho * wo * c) {
    const int ch = t % c; long long r = t / c;
    const int ow = r % wo; r /= wo;
    const int oh = r % ho; const long long b = r / ho;
    const long long base = ((b * h + 2 * oh) * w + 2 * ow) * c + ch;
    const long long off[4] = {0, c, rowc, rowc + c};
    T best = x[base]; signed char k = 0;
    for (int q = 1; q < 4; ++q) {
      const T v = x[base + off[q]];
      if (v > best || (v != v && best == best)) { best = v; k = q; }
    }
    y[t] = best; arg[t] = k;
  }
}

// Routes dy to the argmax cell and writes 0 to the other three cells of its window.
extern "C" __global__ void maxpool2x2_bwd(const signed char* arg, const T* dy, T* dx, int n, int h, int w, int c) {
  const int ho = h / 2, wo = w / 2;
  const long long rowc = (long long)w * c;
  GRID_STRIDE(t, (long long)n * ho * wo * c) {
    const int ch = t % c; long long r = t / c;
    const int ow = r % wo; r /= wo;
    const int oh = r % ho; const long long b = r / ho;
    const long long base = ((b * h + 2 * oh) * w + 2 * ow) * c + ch;
    const T g = dy[t]; const signed char k = arg[t];
    dx[base] = k == 0 ? g : (T)0;
    dx[base + c] = k == 1 ? g : (T)0;
    dx[base + rowc] = k == 2 ? g : (T)0;
    dx[base + rowc + c] = k == 3 ? g : (T)0;
  }
}

// (N, H, W, C) -> cols (N*Ho*Wo, k*k*C), columns ordered (ki, kj, c); zero padding inline.
extern "C" __global__ void im2col(const T* x, T* cols, int n, int h, int w, int c, int k, int pad, int ho, int wo) {
  const int kkc = k * k * c;
  GRID_STRIDE(t, (long long)n * ho * wo * kkc) {
    const int col = t % kkc; const long long row = t / kkc;
    const int ch = col % c, kj = (col / c) % k, ki = col / (c * k);
    const int ow = row % wo; const long long r = row / wo;
    const int oh = r % ho; const long long b = r / ho;
    const int ih = oh + ki - pad, iw = ow + kj - pad;
    cols[t] = (ih >= 0 && ih < h && iw >= 0 && iw < w) ? x[((b * h + ih) * w + iw) * c + ch] : (T)0;
  }
}

// Adjoint of im2col as a gather: one thread per input element sums its k*k contributions
// in (ki, kj) order, the order the reference's scatter-add uses.
extern "C" __global__ void col2im(const T* dcols, T* dx, int n, int h, int w, int c, int k, int pad, int ho, int wo) {
  const int kkc = k * k * c;
  GRID_STRIDE(t, (long long)n * h * w * c) {
    const int ch = t % c; long long r = t / c;
    const int iw = r % w; r /= w;
    const int ih = r % h; const long long b = r / h;
    T s = (T)0;
    for (int ki = 0; ki < k; ++ki) {
      const int oh = ih - ki + pad;
      if (oh < 0 || oh >= ho) continue;
      for (int kj = 0; kj < k; ++kj) {
        const int ow = iw - kj + pad;
        if (ow < 0 || ow >= wo) continue;
        s += dcols[((b * ho + oh) * wo + ow) * kkc + (ki * k + kj) * c + ch];
      }
    }
    dx[t] = s;
  }
}

// Softmax + MSE head, one thread per row: p = softmax(z), rowloss = sum (p - y)^2,
// dz = softmax VJP of dp = (p - y) * scale, scale = 2 / (N*K).
extern "C" __global__ void softmax_mse_head(const T* z, const T* y, T* p, T* dz, T* rowloss, int n, int k, T scale) {
  GRID_STRIDE(r, (long long)n) {
    const T* zr = z + r * k; const T* yr = y + r * k; T* pr = p + r * k; T* dr = dz + r * k;
    T m = zr[0];
    for (int j = 1; j < k; ++j) if (zr[j] > m) m = zr[j];
    T s = (T)0;
    for (int j = 0; j < k; ++j) { const T e = exp(zr[j] - m); pr[j] = e; s += e; }
    T l = (T)0, dot = (T)0;
    for (int j = 0; j < k; ++j) {
      const T pj = pr[j] / s; pr[j] = pj;
      const T d = pj - yr[j]; l += d * d;
      const T dp = d * scale; dr[j] = dp; dot += dp * pj;
    }
    for (int j = 0; j < k; ++j) dr[j] = pr[j] * (dr[j] - dot);
    rowloss[r] = l;
  }
}

// Softmax + cross-entropy head from the logits: rowloss = sum y * log_softmax(z),
// p = exp(log_softmax(z)), dz = (p - y) * inv_n.
extern "C" __global__ void softmax_ce_head(const T* z, const T* y, T* p, T* dz, T* rowloss, int n, int k, T inv_n) {
  GRID_STRIDE(r, (long long)n) {
    const T* zr = z + r * k; const T* yr = y + r * k; T* pr = p + r * k; T* dr = dz + r * k;
    T m = zr[0];
    for (int j = 1; j < k; ++j) if (zr[j] > m) m = zr[j];
    T s = (T)0;
    for (int j = 0; j < k; ++j) s += exp(zr[j] - m);
    const T lse = log(s);
    T l = (T)0;
    for (int j = 0; j < k; ++j) {
      const T lp = (zr[j] - m) - lse; l += yr[j] * lp;
      const T pj = exp(lp); pr[j] = pj; dr[j] = (pj - yr[j]) * inv_n;
    }
    rowloss[r] = l;
  }
}
"""
RAW_NAMES = ("maxpool2x2_fwd", "maxpool2x2_bwd", "im2col", "col2im", "softmax_mse_head", "softmax_ce_head")


# ---------------------------------------------------------------------- twins of the raw kernels
def twin_maxpool_forward(x):
    """The ``maxpool2x2_fwd`` logic in NumPy: strict ``>`` scan of the 4 cells, NaN wins."""
    n, h, w, c = x.shape
    ho, wo = h // 2, w // 2
    cells = [x[:, di : 2 * ho : 2, dj : 2 * wo : 2, :] for di in (0, 1) for dj in (0, 1)]
    best, arg = cells[0].copy(), np.zeros((n, ho, wo, c), dtype=np.int8)
    for q in (1, 2, 3):
        take = (cells[q] > best) | (np.isnan(cells[q]) & ~np.isnan(best))
        best = np.where(take, cells[q], best)
        arg[take] = q
    return best, arg


def twin_maxpool_backward(arg, x_shape, dy):
    """The ``maxpool2x2_bwd`` logic: each window cell gets dy where it is the argmax, else 0."""
    n, h, w, c = x_shape
    ho, wo = h // 2, w // 2
    dx = np.zeros(x_shape, dtype=dy.dtype) if (h % 2 or w % 2) else np.empty(x_shape, dtype=dy.dtype)
    for q, (di, dj) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        dx[:, di : 2 * ho : 2, dj : 2 * wo : 2, :] = np.where(arg == q, dy, dy.dtype.type(0))
    return dx


def twin_softmax_head(loss: str, z, y):
    """(loss, p, dz) with the reference's own functions: the head kernels' specification."""
    if loss == "cross_entropy":
        return mlp.cross_entropy_from_logits(z, y)
    p = mlp.softmax(z)
    value, dout = mlp.mse_loss(p, y)
    return value, p, mlp.softmax_backward(p, dout)


# ---------------------------------------------------------------------- the table
class Kernels:
    """The kernel table. Subclasses supply ``_ew`` (elementwise) and ``_raw`` (launch)."""

    provider = "abstract"

    def __init__(self, dtype: str, xp):
        self.dtype, self.xp = dtype, xp
        self.scalar = np.dtype(dtype).type

    # ---- elementwise
    def bias_act(self, kind: str, z, b):
        return self._ew(f"bias_{kind}", z, b)[0]

    def act_backward(self, kind: str, out, dy, mask=None):
        if mask is None:
            return self._ew(f"{kind}_backward", out, dy)[0]
        return self._ew(f"{kind}_dropout_backward", out, mask, dy)[0]

    def dropout(self, x, u, rate: float):
        """(x * m, m), m = (u >= rate) / (1 - rate): inverted dropout from given uniforms."""
        y, m = self._ew("dropout", x, u, float(rate), 1.0 / (1.0 - rate))
        return y, m

    def sgd(self, w, g, lr: float) -> None:
        self._ew("sgd", g, float(lr), w)

    # ---- raw kernels
    def maxpool_forward(self, x):
        n, h, w, c = x.shape
        y = self.xp.empty((n, h // 2, w // 2, c), dtype=x.dtype)
        arg = self.xp.empty(y.shape, dtype=np.int8)
        self._raw("maxpool2x2_fwd", y.size, self.xp.ascontiguousarray(x), y, arg, n, h, w, c)
        return y, arg

    def maxpool_backward(self, arg, x_shape, dy):
        n, h, w, c = x_shape
        alloc = self.xp.zeros if (h % 2 or w % 2) else self.xp.empty
        dx = alloc(x_shape, dtype=dy.dtype)
        self._raw("maxpool2x2_bwd", dy.size, arg, self.xp.ascontiguousarray(dy), dx, n, h, w, c)
        return dx

    def im2col(self, x, k: int, padding: str):
        n, h, w, c = x.shape
        p = k // 2 if padding == "same" else 0
        ho, wo = h + 2 * p - k + 1, w + 2 * p - k + 1
        cols = self.xp.empty((n * ho * wo, k * k * c), dtype=x.dtype)
        self._raw("im2col", cols.size, self.xp.ascontiguousarray(x), cols, n, h, w, c, k, p, ho, wo)
        return cols, (n, ho, wo)

    def col2im(self, dcols, x_shape, k: int, padding: str):
        n, h, w, c = x_shape
        p = k // 2 if padding == "same" else 0
        ho, wo = h + 2 * p - k + 1, w + 2 * p - k + 1
        dx = self.xp.empty(x_shape, dtype=dcols.dtype)
        self._raw("col2im", dx.size, self.xp.ascontiguousarray(dcols), dx, n, h, w, c, k, p, ho, wo)
        return dx

    def softmax_head(self, loss: str, z, y):
        """(mean loss as a 0-d device array, p, d loss / d z) for a final softmax."""
        n, k = z.shape
        p, dz = self.xp.empty_like(z), self.xp.empty_like(z)
        rowloss = self.xp.empty((n,), dtype=z.dtype)
        z, y = self.xp.ascontiguousarray(z), self.xp.ascontiguousarray(y)
        if loss == "cross_entropy":
            self._raw("softmax_ce_head", n, z, y, p, dz, rowloss, n, k, 1.0 / n)
            return -rowloss.sum() / n, p, dz
        self._raw("softmax_mse_head", n, z, y, p, dz, rowloss, n, k, 2.0 / (n * k))
        return rowloss.sum() / (n * k), p, dz

    def _ew(self, name: str, *args):  # pragma: no cover - abstract
        raise NotImplementedError

    def _raw(self, name: str, total: int, *args):  # pragma: no cover - abstract
        raise NotImplementedError


class TwinKernels(Kernels):
    """NumPy twins: the CPU stand-in for the CUDA kernels (same operations, same order)."""

    provider = "numpy"

    def __init__(self, dtype: str):
        super().__init__(dtype, np)

    def _ew(self, name, *args):
        out = ELEMENTWISE[name].twin(*args)
        return out if isinstance(out, tuple) else (out,)

    def maxpool_forward(self, x):
        return twin_maxpool_forward(x)

    def maxpool_backward(self, arg, x_shape, dy):
        return twin_maxpool_backward(arg, x_shape, dy)

    def im2col(self, x, k, padding):
        return cnn.im2col(x, k, padding)

    def col2im(self, dcols, x_shape, k, padding):
        return cnn.col2im(dcols, x_shape, k, padding)

    def softmax_head(self, loss, z, y):
        return twin_softmax_head(loss, z, y)


def _grid(total: int) -> int:
    return max(1, min((total + BLOCK - 1) // BLOCK, MAX_GRID))


class CudaKernels(Kernels):
    """CuPy kernels, compiled once per process and dtype (NVRTC caches them on disk too)."""

    provider = "cuda"

    def __init__(self, dtype: str):
        import cupy

        super().__init__(dtype, cupy)
        self._module = _cuda_module(dtype)
        self._functions: dict = {}

    def _ew(self, name, *args):
        spec = ELEMENTWISE[name]
        kernel = _cuda_elementwise(name)
        ins = [self.scalar(a) if isinstance(a, float) else a for a in args[: len(spec.inputs)]]
        out = kernel(*ins, *args[len(spec.inputs) :])
        return out if isinstance(out, tuple) else (out,)

    def _raw(self, name, total, *args):
        conv = [np.int32(a) if isinstance(a, int) else self.scalar(a) if isinstance(a, float) else a for a in args]
        if name not in self._functions:
            self._functions[name] = self._module.get_function(name)
        self._functions[name]((_grid(total),), (BLOCK,), tuple(conv))


@functools.cache
def _cuda_elementwise(name: str):
    import cupy

    spec = ELEMENTWISE[name]
    ins = ", ".join(f"T {p}" for p in spec.inputs)
    outs = ", ".join(f"T {p}" for p in spec.outputs)
    return cupy.ElementwiseKernel(ins, outs, spec.body, f"nnbench_{name}")


@functools.cache
def _cuda_module(dtype: str):
    import cupy

    return cupy.RawModule(code=f"typedef {CTYPES[dtype]} T;\n{RAW_SOURCE}", options=("--std=c++11",))


# ---------------------------------------------------------------------- CPU emulation of the CUDA source
EMU_PRELUDE = """
#include <cmath>
using std::exp; using std::log; using std::tanh;
struct emu_dim3 { unsigned int x, y, z; };
static const emu_dim3 threadIdx = {0, 0, 0}, blockIdx = {0, 0, 0}, blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
#define __global__
"""


def _emu_elementwise_source(name: str, spec: Elementwise) -> str:
    """A C loop running an ElementwiseKernel body once per element (inputs pre-broadcast)."""
    params, binds = ["long long n"], []
    for p in spec.inputs:
        if p in spec.scalars:
            params.append(f"const T {p}")
        else:
            params.append(f"const T* {p}_")
            binds.append(f"const T {p} = {p}_[i];")
    for p in spec.outputs:
        params.append(f"T* {p}_")
        binds.append(f"T& {p} = {p}_[i];")
    return (
        f'extern "C" void ew_{name}({", ".join(params)}) {{\n'
        f"  for (long long i = 0; i < n; ++i) {{ {' '.join(binds)} {spec.body}; }}\n}}\n"
    )


def compiler() -> str | None:
    """The host C++ compiler the emulation needs, or None."""
    return shutil.which("g++") or shutil.which("c++") or shutil.which("clang++")


@functools.cache
def _emu_library(dtype: str, raw_source: str = RAW_SOURCE) -> ctypes.CDLL:
    """Compile the raw kernels and the elementwise loops for the CPU (cached per source)."""
    cxx = compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler (g++/c++/clang++) on PATH for the kernel emulation")
    src = f"typedef {CTYPES[dtype]} T;\n{EMU_PRELUDE}\n{raw_source}\n"
    src += "\n".join(_emu_elementwise_source(n, s) for n, s in ELEMENTWISE.items())
    tmp = Path(tempfile.mkdtemp(prefix="nnbench-cupy-emu-"))
    (tmp / "k.cpp").write_text(src)
    cmd = [
        cxx,
        "-O2",
        "-ffp-contract=off",
        "-std=c++14",
        "-shared",
        "-fPIC",
        "-o",
        str(tmp / "k.so"),
        str(tmp / "k.cpp"),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"emulation compile failed:\n{res.stderr}")
    lib = ctypes.CDLL(str(tmp / "k.so"))
    shutil.rmtree(tmp, ignore_errors=True)  # the loaded library stays mapped
    return lib


class EmulatedKernels(Kernels):
    """The CUDA source compiled for the CPU (tests only); arrays are NumPy. ``raw_source``
    replaces ``RAW_SOURCE`` (the tests' negative controls compile a mutated copy)."""

    provider = "emulated"

    def __init__(self, dtype: str, raw_source: str = RAW_SOURCE):
        super().__init__(dtype, np)
        self._lib = _emu_library(dtype, raw_source)
        self._cscalar = ctypes.c_float if dtype == "float32" else ctypes.c_double

    def _arg(self, a):
        if isinstance(a, np.ndarray):
            assert a.flags.c_contiguous, "emulated kernels take C-contiguous arrays"
            return ctypes.c_void_p(a.ctypes.data)
        return ctypes.c_int(a) if isinstance(a, int) else self._cscalar(a)

    def _ew(self, name, *args):
        spec = ELEMENTWISE[name]
        ins = dict(zip(spec.inputs, args, strict=False))
        arrays = [ins[p] for p in spec.inputs if p not in spec.scalars]
        if name in INPLACE:
            outs = list(args[len(spec.inputs) :])
            arrays = [np.broadcast_to(a, outs[0].shape) for a in arrays]
        else:
            arrays = list(np.broadcast_arrays(*arrays))
            outs = [np.empty(arrays[0].shape, dtype=self.dtype) for _ in spec.outputs]
        arrays = iter([np.ascontiguousarray(a, dtype=self.dtype) for a in arrays])
        cargs = [self._arg(float(ins[p]) if p in spec.scalars else next(arrays)) for p in spec.inputs]
        getattr(self._lib, f"ew_{name}")(ctypes.c_longlong(outs[0].size), *cargs, *[self._arg(o) for o in outs])
        return tuple(outs)

    def _raw(self, name, total, *args):
        getattr(self._lib, name)(*[self._arg(a) for a in args])


PROVIDERS: dict[str, type[Kernels]] = {"numpy": TwinKernels, "cuda": CudaKernels, "emulated": EmulatedKernels}


def make_kernels(provider: str, dtype: str) -> Kernels:
    """The kernel table for ``provider`` (``"cuda"``, ``"numpy"`` or ``"emulated"``)."""
    if provider not in PROVIDERS:
        raise KeyError(f"unknown kernel provider {provider!r}; valid: {', '.join(PROVIDERS)}")
    return PROVIDERS[provider](dtype)
