"""The GPU backends (cupy, torch-cuda, jax-gpu) on a real CUDA device, through the harness's own code.

Every test is parametrised by backend and skipped, with that backend's own ``available()``
reason, where it cannot run (no CUDA device, CuPy not installed, a CPU-only torch).

- Agreement is ``bench.check.agreement.check``, what ``python -m bench run`` records for every
  backend: the one tolerance table (``bench.check.agreement.TOLERANCES``), shape and dtype checks,
  a fresh batch for each optimizer step.
- Speed is measured by the normal run, ``python -m bench run --impls numpy,cupy,torch-cuda``
  (its report names the device in each backend's settings); here only the callable the worker
  times (``train_step`` then ``sync()``) goes once through ``bench.measure.timing.Timer``.
- Backend-specific: CuPy's CUDA kernels against their NumPy twins and a ``train_step`` that
  never synchronizes; torch-cuda's TF32 switched off.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.check.agreement import check, sample_batch
from bench.core.params import init_params
from bench.measure.timing import Timer, TimingConfig
from bench.plan import backends
from bench.plan.presets import preset

pytestmark = pytest.mark.gpu
GPU_IMPLS = ("cupy", "torch-cuda", "jax-gpu")
PRESETS = ("tiny-mlp", "tiny-cnn", "mlp", "mlp-relu", "cnn", "dnn")


def require(impl: str):
    """The backend module, or a skip that says why it cannot run here."""
    ok, reason = backends.get(impl).available()
    if not ok:
        pytest.skip(f"{impl} unavailable: {reason}")
    return backends.get(impl)


def device_batch(model, spec, n: int, dtype: str = "float32"):
    x, y = sample_batch(spec, n, 0)
    xd, yd = model.to_device(x.astype(dtype)), model.to_device(y.astype(dtype))
    model.sync()
    return xd, yd


# ---------------------------------------------------------------------- every GPU backend
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("impl", GPU_IMPLS)
def test_agreement_on_device(impl, name, dtype):
    require(impl)
    res = check(impl, name, dtype)
    assert res.passed, res.format(verbose=True)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
@pytest.mark.parametrize("impl", GPU_IMPLS)
def test_train_step_changes_params_on_device(impl, name):
    spec = preset(name)
    params = init_params(spec, 0)
    model = require(impl).build(spec, params, "float32")
    xd, yd = device_batch(model, spec, 50)
    for _ in range(3):
        model.train_step(xd, yd)
    model.sync()
    after = model.params()
    assert all(np.isfinite(v).all() for v in after.values())
    assert any(not np.allclose(after[k], params[k]) for k in params)


@pytest.mark.parametrize("impl", GPU_IMPLS)
def test_harness_timer_times_the_device_step(impl):
    """The worker's timed callable (``train_step`` + ``sync()``) through the harness's timer."""
    spec = preset("mlp")
    model = require(impl).build(spec, init_params(spec, 0), "float32")
    xd, yd = device_batch(model, spec, 50)
    timer = Timer(TimingConfig(warmup_rounds=2, min_rounds=3, max_rounds=3, round_min_s=0.001, target_s=0.0))
    m = timer.measure(f"{impl}-mlp-train_step", lambda: (model.train_step(xd, yd), model.sync()))
    assert m.rounds == 3 and len(m.samples_s) == 3 and 0 < m.min_s <= m.median_s


# ---------------------------------------------------------------------- cupy only
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cupy_device_kernels_match_twins(dtype):
    require("cupy")
    import cupy

    from implementations.cupy import kernels as K

    rng = np.random.default_rng(0)
    dev, twin = K.make_kernels("cuda", dtype), K.make_kernels("numpy", dtype)
    rtol = 1e-13 if dtype == "float64" else 1e-5
    for name, spec in K.ELEMENTWISE.items():
        scalars = {"rate": 0.4, "scale": 1 / 0.6, "lr": 0.1}
        args = [scalars[p] if p in scalars else rng.random((5, 7)).astype(dtype) for p in spec.inputs]
        if name in K.INPLACE:
            args.append(rng.normal(size=(5, 7)).astype(dtype))
        d_args = [cupy.asarray(a) if isinstance(a, np.ndarray) else a for a in args]
        got, want = dev._ew(name, *d_args), twin._ew(name, *args)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(cupy.asnumpy(g), w, rtol=rtol, atol=rtol, err_msg=name)
    x = rng.integers(-2, 3, size=(2, 5, 7, 3)).astype(dtype)  # ties and a floored row/col
    y, arg = dev.maxpool_forward(cupy.asarray(x))
    ty, targ = K.twin_maxpool_forward(x)
    np.testing.assert_array_equal(cupy.asnumpy(y), ty)
    np.testing.assert_array_equal(cupy.asnumpy(arg), targ)
    dy = rng.normal(size=ty.shape).astype(dtype)
    dx = dev.maxpool_backward(arg, x.shape, cupy.asarray(dy))
    np.testing.assert_array_equal(cupy.asnumpy(dx), K.twin_maxpool_backward(targ, x.shape, dy))
    for k, padding in ((3, "same"), (3, "valid"), (5, "same")):
        cols, _ = dev.im2col(cupy.asarray(x), k, padding)
        tcols, _ = twin.im2col(x, k, padding)
        np.testing.assert_array_equal(cupy.asnumpy(cols), tcols)
        dx = dev.col2im(cupy.asarray(tcols), x.shape, k, padding)
        np.testing.assert_allclose(cupy.asnumpy(dx), twin.col2im(tcols, x.shape, k, padding), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_cupy_train_step_never_synchronizes(name):
    """Once warmed up, ``train_step`` reads nothing back (no ``float()``, no ``.get()``)."""
    backend = require("cupy")
    import cupy
    import cupyx

    spec = preset(name)
    model = backend.build(spec, init_params(spec), "float32")
    xd, yd = device_batch(model, spec, 50)
    assert isinstance(xd, cupy.ndarray) and isinstance(model.w["1.W" if name == "mlp" else "0.W"], cupy.ndarray)
    model.train_step(xd, yd)  # compiles the kernels
    model.sync()
    with cupyx.allow_synchronize(False):
        for _ in range(3):
            model.train_step(xd, yd)
    model.sync()


# ---------------------------------------------------------------------- torch-cuda only
def test_torch_cuda_tf32_is_off_and_settings_name_the_device():
    backend = require("torch-cuda")
    import torch

    s = backend.settings()
    assert s["device"] == "cuda" and s["tf32_matmul"] is False and s["tf32_cudnn"] is False
    assert s["device_name"] == torch.cuda.get_device_name(0)


def test_torch_cuda_batches_live_on_the_device():
    backend = require("torch-cuda")
    spec = preset("cnn")
    model = backend.build(spec, init_params(spec, 0), "float32")
    xd, yd = device_batch(model, spec, 50)
    assert xd.is_cuda and yd.is_cuda
