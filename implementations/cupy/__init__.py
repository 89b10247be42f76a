"""CuPy implementation: the NumPy reference's code on the GPU plus fused CUDA kernels.

``model.CupyModel`` subclasses the NumPy ``XpModel`` (one ``xp`` code path) and routes the
hot elementwise work, pooling, im2col/col2im and the softmax+loss head through a kernel
table (``kernels.py``) whose every kernel has a NumPy twin, so the whole class is tested on
the CPU with ``xp=numpy``. CuPy is an optional extra (``pip install .[gpu]``); nothing here
imports it at module level.

Nothing harness-side lives here: agreement is ``bench.check.agreement.check`` (``tests/gpu/``), and
the GPU report is the normal run, ``python -m bench run --impls numpy,cupy,torch-cuda``.
"""

from __future__ import annotations

import os

REQUIRES: tuple[str, ...] = ("gpu",)


class CupyUnavailable(RuntimeError):
    """``build`` on a machine where ``available()`` is false; the message says why. Not a
    ``NotImplementedError``: the backend is implemented, the device is missing."""


def _cuda_error_reason(cupy, e: Exception) -> str:
    """The exception text, classified, plus the driver/runtime versions when readable."""
    text = f"{type(e).__name__}: {e}"
    versions: dict[str, int] = {}
    for label, query in (("driver", "driverGetVersion"), ("runtime", "runtimeGetVersion")):
        try:
            versions[label] = int(getattr(cupy.cuda.runtime, query)())
        except Exception:
            pass
    detail = ", ".join(f"CUDA {k} version {v}" for k, v in versions.items())
    if versions.get("driver") == 0:
        detail += " (driver version 0: no NVIDIA driver is loaded)"
    if "insufficient" in text.lower():
        kind = "CUDA driver missing or too old"
    elif "nodevice" in text.lower() or "no cuda-capable device" in text.lower():
        kind = "no CUDA device"
    else:
        kind = "CUDA device query failed"
    return f"{kind}: {text}" + (f"; {detail}" if detail else "")


def _probe(cupy) -> str:
    """Run a tiny kernel and read it back; returns the device description."""
    a = cupy.arange(8, dtype=cupy.float32)
    total = float((a * 2).sum())
    if total != 56.0:
        raise RuntimeError(f"probe kernel returned {total}, expected 56.0")
    dev = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return f"{name} (compute capability {dev.compute_capability})"


def available() -> tuple[bool, str]:
    """(ok, reason). Never raises: not installed, no device, old driver and a failing kernel
    launch each give ``False`` with the real exception text."""
    try:
        import cupy
    except Exception as e:  # ImportError, or CuPy failing to load its CUDA libraries
        return False, f"cupy not installed or not importable: {type(e).__name__}: {e}"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:
        return False, _cuda_error_reason(cupy, e)
    if count < 1:
        return False, f"no CUDA device (getDeviceCount() returned {count})"
    try:
        device = _probe(cupy)
    except Exception as e:
        return False, f"tiny CuPy kernel launch failed: {type(e).__name__}: {e}"
    return True, f"cupy {cupy.__version__} on {device}"


def build(spec, params, dtype: str = "float32", seed: int = 0):
    ok, reason = available()
    if not ok:
        raise CupyUnavailable(f"cupy backend unavailable: {reason}")
    import cupy

    from .model import CupyModel

    return CupyModel(spec, params, dtype, xp=cupy, seed=seed)


def settings() -> dict:
    """Library, device and the knobs that change CuPy's numbers; never raises."""
    ok, reason = available()
    out: dict = {"layout": "NHWC internal", "kernels": "fused elementwise + RawKernel pool/im2col/col2im/softmax head"}
    out["cupy_tf32"] = os.environ.get("CUPY_TF32", "0")  # 1 would let cuBLAS use TF32 for float32 GEMMs
    try:
        import cupy

        out["library"] = f"cupy {cupy.__version__}"
    except Exception as e:
        out["library"] = f"cupy not importable ({type(e).__name__})"
    if not ok:
        out["device"] = f"unavailable: {reason}"
        return out
    import cupy

    rt = cupy.cuda.runtime
    out["device"] = reason.split(" on ", 1)[1]
    out["cuda_runtime"] = rt.runtimeGetVersion()
    out["cuda_driver"] = rt.driverGetVersion()
    return out
