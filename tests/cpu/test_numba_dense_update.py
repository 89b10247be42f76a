"""numba: the dense layers' SGD update fused with their weight gradient (``numba.blas``): one
GEMM into W in NumPy's own BLAS, against the separate GEMM + SGD kernel; negative controls."""

import numpy as np
import pytest

from bench.core.params import init_params
from bench.plan import backends
from bench.plan.presets import preset
from implementations.numba import blas
from implementations.numba import model as nb_model

NB = backends.get("numba")
TOL = {"float64": 1e-12, "float32": 2e-6}  # one GEMM's rounding against another's, relative to W


@pytest.fixture
def one_thread(monkeypatch):
    monkeypatch.setenv("NNBENCH_THREADS", "1")  # one shard: the fused path (the shards sum their gradients first)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", [(50, 784, 800), (7, 3, 5), (1, 800, 10)])
def test_accumulate_at_b_is_w_plus_alpha_a_transpose_b(shape, dtype):
    n, k, o = shape
    rng = np.random.default_rng(0)
    a, b, w = (rng.standard_normal(s).astype(dtype) for s in ((n, k), (n, o), (k, o)))
    want = w.astype(np.float64) - 0.1 * (a.astype(np.float64).T @ b.astype(np.float64))
    blas.accumulate_at_b(w, a, b, -0.1)
    assert w.dtype == np.dtype(dtype)
    assert np.abs(w - want).max() / np.abs(want).max() <= 10 * TOL[dtype]


def test_accumulate_at_b_refuses_layouts_it_would_misread():
    rng = np.random.default_rng(0)
    a, b, w = rng.random((4, 3)), rng.random((4, 5)), rng.random((3, 5))
    with pytest.raises(AssertionError):
        blas.accumulate_at_b(w, np.asfortranarray(a), b, 1.0)  # strides BLAS would not be told
    with pytest.raises(AssertionError):
        blas.accumulate_at_b(w, a.astype(np.float32), b, 1.0)  # mixed dtypes
    with pytest.raises(AssertionError):
        blas.accumulate_at_b(w.T.copy(), a, b, 1.0)  # W of the wrong shape


def _trained(name: str, dtype: str, fused: bool, steps: int = 3, train: bool = True) -> dict[str, np.ndarray]:
    spec = preset(name)
    m = NB.build(spec, init_params(spec, 0, bias="uniform"), dtype)
    assert m.threads == 1 and m.fused_update  # what the test is about: the backend's default here
    m.fused_update = fused
    rng = np.random.default_rng(1)
    for _ in range(steps):
        x = rng.random((6, *spec.input_shape))
        y = np.eye(spec.num_classes)[rng.integers(0, spec.num_classes, 6)]
        if train:  # the timed step (dropout on)
            m.train_step(m.to_device(x), m.to_device(y))
        else:
            m.sgd_step(x, y, 0.5)
    return m.params()


def _worst(got: dict, want: dict) -> tuple[float, str]:
    errs = {k: float(np.abs(got[k] - want[k]).max() / np.abs(want[k]).max()) for k in want}
    name = max(errs, key=errs.get)
    return errs[name], name


@pytest.mark.parametrize("train", [True, False], ids=["train_step", "sgd_step"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ["tiny-mlp", "mlp", "tiny-cnn"])
def test_fused_update_trains_as_the_separate_one(one_thread, name, dtype, train):
    """Every parameter after 3 steps, fused against separate: equal to rounding. The dense input
    gradient must use W before its update: computed after it, the mlp's first layer moves by
    about lr * |dW| (far past the tolerance)."""
    fused, separate = _trained(name, dtype, True, train=train), _trained(name, dtype, False, train=train)
    assert fused.keys() == separate.keys()
    err, where = _worst(fused, separate)
    assert err <= TOL[dtype], f"{name} {dtype}: {where} differs by {err:.3g}"
    moved, _ = _worst(fused, {k: v for k, v in init_params(preset(name), 0, bias="uniform").items()})
    assert moved > 1e3 * TOL[dtype]  # the steps did move the parameters


def test_negative_control_a_sloppy_fused_update_is_caught(one_thread, monkeypatch):
    real = blas.accumulate_at_b
    monkeypatch.setattr(blas, "accumulate_at_b", lambda w, a, b, alpha: real(w, a, b, alpha * 1.001))
    err, where = _worst(_trained("tiny-mlp", "float64", True), _trained("tiny-mlp", "float64", False))
    assert err > 1e3 * TOL["float64"], (where, err)


def test_negative_control_dx_after_the_update_is_caught(one_thread, monkeypatch):
    """The order the docstring promises, broken on purpose: W updated before dx reads it."""

    def update_first(self, i, cache, dy, code, act_out, grads, lr=None):
        layer = self.layers[i]
        if lr is None or layer.type != "dense":
            return real(self, i, cache, dy, code, act_out, grads, lr)
        dy2 = dy.reshape(-1, dy.shape[-1])
        dz, db = np.empty_like(dy2), np.empty(dy2.shape[1], dtype=dy2.dtype)
        nb_model.K.act_grad_bias(dy2 if act_out is None else act_out.reshape(dy2.shape), dy2, code, dz, db)
        self._dense_update(i, cache, dz, db, lr)
        return dz @ self.w[f"{i}.W"].T if self.need_dx[i] else None

    real = nb_model.NumbaModel._param_backward
    monkeypatch.setattr(nb_model.NumbaModel, "_param_backward", update_first)
    err, where = _worst(_trained("mlp", "float64", True), _trained("mlp", "float64", False))
    assert err > 1e3 * TOL["float64"], (where, err)


def test_without_the_blas_symbol_the_update_is_separate_and_says_so(one_thread, monkeypatch):
    monkeypatch.setattr(blas, "FUSED", None)
    monkeypatch.setattr(blas, "REASON", "no CBLAS gemm symbol (test)")
    spec = preset("tiny-mlp")
    m = NB.build(spec, init_params(spec, 0), "float32")
    assert not m.fused_update
    setting = NB.settings()["dense_sgd_update"]
    assert setting.startswith("separate") and "no CBLAS gemm symbol (test)" in setting
    with pytest.raises(RuntimeError, match="unavailable"):
        blas.accumulate_at_b(np.zeros((2, 2)), np.zeros((1, 2)), np.zeros((1, 2)), 1.0)


def test_settings_name_the_blas_the_update_runs_in():
    setting = NB.settings()["dense_sgd_update"]
    assert setting.startswith("fused") and "gemm" in setting, setting
