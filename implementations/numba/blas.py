"""``W += alpha * A^T @ B`` in one BLAS call: the dense layers' weight gradient and SGD update fused.

NumPy's ``@`` has no ``beta``: ``dW = x.T @ dz`` writes a fresh (in, out) array, then the SGD
kernel reads it and ``W`` again and writes ``W``: four passes over a 2.5 MB matrix per 800x800
layer. BLAS's ``gemm`` with ``beta = 1`` accumulates into ``W`` directly (two passes, read and
write): ``W (in, out) += (-lr) * x^T (in, N) @ dz (N, out)``. The call goes to *NumPy's own*
BLAS (the library ``threadpoolctl`` reports for NumPy, through ``ctypes``), so it runs the same
kernels, under the same thread limits, as every other GEMM of the backend; no second BLAS is
loaded. Its CBLAS symbol is looked up under the names the OpenBLAS builds NumPy ships with use
(``scipy_cblas_sgemm64_``: the ILP64 ``scipy-openblas`` of NumPy 2's wheels; ``cblas_sgemm``:
a plain OpenBLAS or another CBLAS). Where none is found (another BLAS, a stripped build),
``FUSED`` is None, ``REASON`` says why, the model keeps the separate GEMM + SGD kernel and its
``settings`` say so.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from typing import Any

import numpy as np

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112  # CBLAS enums
# (symbol of sgemm, of dgemm, integer type), tried in order
SYMBOLS = (
    ("scipy_cblas_sgemm64_", "scipy_cblas_dgemm64_", ctypes.c_int64),
    ("cblas_sgemm64_", "cblas_dgemm64_", ctypes.c_int64),
    ("scipy_cblas_sgemm", "scipy_cblas_dgemm", ctypes.c_int),
    ("cblas_sgemm", "cblas_dgemm", ctypes.c_int),
)


def _numpy_blas_path() -> str:
    """The file of the BLAS NumPy calls (``threadpoolctl``'s view of this process)."""
    from threadpoolctl import threadpool_info

    libs = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    if not libs:
        raise OSError("threadpoolctl finds no BLAS loaded by NumPy")
    # NumPy's wheels bundle theirs in numpy.libs/ (or numpy/.libs/): never another package's BLAS
    # that shares site-packages (torch, scipy); a NumPy linked to a system BLAS has only that one
    numpy_dir = os.path.dirname(np.__file__)
    ours = [i for i in libs if str(i.get("filepath", "")).startswith((numpy_dir + os.sep, numpy_dir + ".libs"))]
    return str((ours or libs)[0]["filepath"])


def _bind(lib: ctypes.CDLL, name: str, real: Any, integer: Any) -> Callable[..., None]:
    fn = getattr(lib, name)
    ptr = ctypes.c_void_p
    fn.argtypes = [ctypes.c_int] * 3 + [integer] * 3 + [real, ptr, integer, ptr, integer, real, ptr, integer]
    fn.restype = None
    return fn


def _find() -> tuple[dict[np.dtype, Callable[..., None]] | None, str]:
    try:
        path = _numpy_blas_path()
        lib = ctypes.CDLL(path)
    except (OSError, ImportError) as e:
        return None, f"NumPy's BLAS not found: {type(e).__name__}: {e}"
    for s_name, d_name, integer in SYMBOLS:
        if hasattr(lib, s_name) and hasattr(lib, d_name):
            fns = {
                np.dtype(np.float32): _bind(lib, s_name, ctypes.c_float, integer),
                np.dtype(np.float64): _bind(lib, d_name, ctypes.c_double, integer),
            }
            return fns, f"{s_name} of {path.rsplit('/', 1)[-1]}"
    return None, f"no CBLAS gemm symbol ({', '.join(s for s, _, _ in SYMBOLS)}) in {path}"


FUSED, REASON = _find()


def accumulate_at_b(w: np.ndarray, a: np.ndarray, b: np.ndarray, alpha: float) -> None:
    """``w (K, O) += alpha * a^T (K, N) @ b (N, O)`` in place; every array C-contiguous, one dtype.
    Raises ``RuntimeError`` when ``FUSED`` is None (callers check it first)."""
    if FUSED is None:
        raise RuntimeError(f"fused gemm unavailable: {REASON}")
    (n, k), (n2, o) = a.shape, b.shape
    assert n == n2 and w.shape == (k, o), (w.shape, a.shape, b.shape)
    assert w.dtype == a.dtype == b.dtype and all(x.flags.c_contiguous for x in (w, a, b))
    assert w.flags.writeable
    # row-major C (K, O) = alpha * op(A) (K, N) @ B (N, O) + 1 * C, op(A) = A^T with A stored (N, K)
    FUSED[w.dtype](ROW_MAJOR, TRANS, NO_TRANS, k, o, n, alpha, a.ctypes.data, k, b.ctypes.data, o, 1.0,
                   w.ctypes.data, o)  # fmt: skip
