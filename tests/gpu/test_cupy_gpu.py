"""The CuPy backend on a real CUDA device (skipped, with the reason, everywhere else).

Agreement with the NumPy float64 reference on every preset (float64 1e-9 relative, float32
1e-5 forward / 1e-4 gradients), the CUDA kernels against their NumPy twins on the device,
a training step that never synchronizes with the host, and a smoke test of the speed comparison with
PyTorch on CUDA (goals: mlp >= 0.8x, cnn >= 0.5x).
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.params import init_params
from bench.spec import preset
from implementations.cupy import kernels as K
from implementations.cupy.check import TOLERANCES, batch, compare, failures

pytestmark = pytest.mark.gpu
PRESETS = ("tiny-mlp", "tiny-cnn", "mlp", "mlp-relu", "cnn")


@pytest.fixture(scope="module")
def gpu_backend():
    """The cupy backend module, or a skip that says why it cannot run here."""
    import implementations.cupy as backend

    ok, reason = backend.available()
    if not ok:
        pytest.skip(f"cupy unavailable: {reason}")
    return backend


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", PRESETS)
def test_agreement_on_device(gpu_backend, name, dtype):
    rows = compare(gpu_backend.build, preset(name), dtype, tol=TOLERANCES[dtype])
    bad = failures(rows)
    assert not bad, "; ".join(f"{r['tensor']}({r['phase']}) rel {r['max_rel']:.2e} > {r['tol']:.0e}" for r in bad)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_device_kernels_match_twins(gpu_backend, dtype):
    import cupy

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
def test_train_step_stays_on_device(gpu_backend, name):
    """``train_step`` must not synchronize (no ``float()``, no ``.get()``) once warmed up."""
    import cupy
    import cupyx

    spec = preset(name)
    model = gpu_backend.build(spec, init_params(spec), "float32")
    x, y = batch(spec, 50)
    xd, yd = model.to_device(x), model.to_device(y)
    assert isinstance(xd, cupy.ndarray) and isinstance(model.w["1.W" if name == "mlp" else "0.W"], cupy.ndarray)
    model.train_step(xd, yd)  # compiles the kernels
    model.sync()
    before = model.params()
    with cupyx.allow_synchronize(False):
        for _ in range(3):
            model.train_step(xd, yd)
    model.sync()
    after = model.params()
    assert all(np.isfinite(v).all() for v in after.values())
    assert any(not np.array_equal(after[k], before[k]) for k in before)


def test_speed_comparison_produces_figures(gpu_backend):
    """Smoke test of the GPU report's timing path. The speed goals themselves (mlp >= 0.8x,
    cnn >= 0.5x torch-cuda) are measured by ``gpu_report``, never asserted in tests."""
    import implementations
    from implementations.cupy import gpu_report

    ok, reason = implementations.get("torch-cuda").available()
    if not ok:
        pytest.skip(f"torch-cuda unavailable: {reason}")
    medians, _, skipped = gpu_report.speed(["mlp", "cnn"], batch=50, warmup=2, repeats=3, inner=2)
    assert not skipped, skipped
    for r in gpu_report.ratios(medians):
        assert r["cupy_ms"] > 0 and r["torch_cuda_ms"] > 0, r
