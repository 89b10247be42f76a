"""numba: agreement with the NumPy float64 reference (float64 and float32, presets, random
and odd specs), threads, dropout, kernels, compile-time measurement, negative controls."""

import numba  # noqa: F401 - a required dependency of the test env: missing numba is an error, not a skip
import numpy as np
import pytest
from odd_specs import ODD_SPECS  # noqa: E402 - valid padding, floor pools, k=1/5, unfused activations

from bench.check.agreement import TOLERANCES, check  # noqa: E402
from bench.core.model import one_hot  # noqa: E402
from bench.core.params import init_params  # noqa: E402
from bench.core.spec import ModelSpec
from bench.plan import backends
from bench.plan.presets import preset, random_spec  # noqa: E402

NB = backends.get("numba")


def _assert_agrees(spec, dtype, **kw):
    res = check("numba", spec, dtype, **kw)
    assert res.passed, res.format(verbose=True)
    return res


FULL = [pytest.param(n, marks=pytest.mark.slow) for n in ("mlp", "cnn", "mlp-relu")]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ["tiny-mlp", "tiny-cnn", *FULL])
def test_presets_agree(name, dtype):
    res = _assert_agrees(name, dtype)
    assert {r["phase"] for r in res.rows} == {"activation", "forward", "loss", "grad", "params"}
    if dtype == "float64":
        assert res.worst()["grad"] <= 1e-9
    else:  # float32 really computes in float32
        assert res.worst()["grad"] > 1e-9
        params = NB.build(preset(name), init_params(preset(name), 0), "float32").params()
        assert all(v.dtype == np.float32 for v in params.values())


@pytest.mark.parametrize("seed", range(8))
def test_random_specs_agree(seed):
    _assert_agrees(random_spec(seed), "float64", seed=seed, batch=5)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("d", ODD_SPECS, ids=lambda d: d["name"])
def test_odd_shapes_agree(d, dtype):
    _assert_agrees(ModelSpec.from_dict(d), dtype, batch=3)


def test_negative_control_a_perturbed_weight_fails():
    spec = preset("cnn")
    params = init_params(spec, 0, bias="uniform")
    bad = {k: v.copy() for k, v in params.items()}
    bad["3.W"][5, 7, 1, 2] += 1e-5
    x = np.random.default_rng(0).random((4, *spec.input_shape))
    got = NB.build(spec, bad, "float64").activations(x)
    want = backends.get("numpy").build(spec, params, "float64").activations(x)
    errs = [np.abs(g - w).max() / np.abs(w).max() for g, w in zip(got, want, strict=False)]
    tol = TOLERANCES["float64"].forward
    assert max(errs[:3]) <= tol < errs[3]  # layers before the perturbed conv agree; it does not


def test_negative_control_wrong_pool_routing_fails(monkeypatch):
    """Routing pool gradients to the last maximum instead of the first must be caught."""
    from implementations.numba import kernels as K

    spec = ModelSpec.from_dict(ODD_SPECS[1])
    orig = K.maxpool_backward

    def last_max(arg, dy, h, w):
        return orig(np.full_like(arg, 3), dy, h, w)

    monkeypatch.setattr(K, "maxpool_backward", last_max)
    assert not check("numba", spec, "float64").passed


def test_threads_follow_the_harness_setting(monkeypatch):

    monkeypatch.setenv("NNBENCH_THREADS", "1")
    NB.build(preset("tiny-mlp"), init_params(preset("tiny-mlp"), 0), "float32")
    assert numba.get_num_threads() == 1
    monkeypatch.setenv("NNBENCH_THREADS", str(numba.config.NUMBA_NUM_THREADS))
    assert NB.settings()["numba_threads"] == numba.config.NUMBA_NUM_THREADS


def test_train_step_uses_dropout_and_learns():
    spec = preset("mlp")
    params = init_params(spec, 0)
    rng = np.random.default_rng(0)
    x, y = rng.random((50, *spec.input_shape)), one_hot(rng.integers(0, 10, 50))
    m, plain = NB.build(spec, params, "float32"), NB.build(spec, params, "float32")
    xd, yd = m.to_device(x), m.to_device(y)
    before, _ = m.loss_and_grads(x, y)
    for _ in range(10):
        m.train_step(xd, yd)
    plain.sgd_step(x, y, spec.train.lr)
    after, _ = m.loss_and_grads(x, y)
    assert after < before
    assert m.params()["1.W"].dtype == np.float32


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_dropout_kernel_rate_scale_and_reproducibility(dtype):
    from implementations.numba import kernels as K

    x = np.ones((300, 1000), dtype=dtype)
    out, mask = K.dropout_forward(x, 0.4, 7)
    kept = mask > 0
    assert abs(kept.mean() - 0.6) < 0.005
    assert out.dtype == mask.dtype == np.dtype(dtype)
    np.testing.assert_allclose(out[kept], 1 / 0.6, rtol=1e-6)
    out2, _ = K.dropout_forward(x, 0.4, 7)
    out3, _ = K.dropout_forward(x, 0.4, 8)
    assert np.array_equal(out, out2) and not np.array_equal(out, out3)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_serial_and_parallel_twins_are_bitwise_equal(dtype):
    """``pick`` routes by size and thread count; both twins must give the same bits (the
    dropout mask is counter-based, so it does not depend on which kernel drew it)."""
    from implementations.numba import kernels as K

    rng = np.random.default_rng(0)
    x = rng.standard_normal((70, 1000)).astype(dtype)  # 70 000 elements: above PAR_MIN
    outs = [(np.empty_like(x), np.empty_like(x)) for _ in range(2)]
    K.dropout_ser(x, x.dtype.type(0.3), 11, *outs[0])
    K.dropout_par(x, x.dtype.type(0.3), 11, *outs[1])
    assert np.array_equal(outs[0][0], outs[1][0]) and np.array_equal(outs[0][1], outs[1][1])
    K.dropout_ser(x, x.dtype.type(0.3), 12, *outs[1])  # control: another key, another mask
    assert not np.array_equal(outs[0][1], outs[1][1])
    g, lr = rng.standard_normal(x.shape).astype(dtype), x.dtype.type(0.01)
    w1, w2 = x.copy(), x.copy()
    K.sgd_ser(w1, g, lr)
    K.sgd_par(w2, g, lr)
    assert np.array_equal(w1, w2) and not np.array_equal(w1, x)


def test_pick_is_serial_at_one_thread_or_below_the_size_threshold():
    import numba

    from implementations.numba import kernels as K

    big, small = np.empty(K.PAR_MIN), np.empty(K.PAR_MIN - 1)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        assert K.pick("ser", "par", big) == "ser"
        if numba.config.NUMBA_NUM_THREADS > 1:
            numba.set_num_threads(2)
            assert K.pick("ser", "par", big) == "par"
            assert K.pick("ser", "par", small) == "ser"
    finally:
        numba.set_num_threads(before)


def _sigmoid_errors(rows_fn, x) -> tuple[float, float]:
    """Max error of ``rows_fn(x)`` (float32) against the float64 sigmoid: in float32 ulps where
    the sigmoid is a normal float32 (> 1e-30), absolute below that (libm returns denormals
    there, the vectorised exp flushes to 0 past 2^-126)."""
    exact = 1 / (1 + np.exp(-x.astype(np.float64)))
    err = np.abs(rows_fn(x) - exact)
    normal = exact > 1e-30
    ulps = err[normal] / np.spacing(exact[normal].astype(np.float32))
    return float(ulps.max()), float(err[~normal].max(initial=0.0))


def test_float32_sigmoid_rows_match_float64_to_libm_accuracy():
    """The float32 sigmoid's own exp (``_sigmoid_row_f32``) against the float64 sigmoid on 4e5
    points over [-120, 120], through both entry points (fused bias, plain activation): at most
    3 ulp (libm's expf gives 2.4); specials as the reference. Negative control: the same
    source with one polynomial coefficient zeroed fails the same bound."""
    import inspect

    from numba import njit

    from implementations.numba import kernels as K

    x = np.linspace(-120, 120, 400_000, dtype=np.float32).reshape(400, -1)
    zero_b = np.zeros(x.shape[1], np.float32)

    def fused(a):
        a = a.copy()
        K.bias_act_ser(a, zero_b, K.SIGMOID)
        return a

    def plain(a):
        out = np.empty_like(a)
        K.act_forward_ser(a, K.SIGMOID, out)
        return out

    assert fused(x).dtype == np.float32 and np.array_equal(fused(x), plain(x))
    ulps, tiny = _sigmoid_errors(fused, x)
    assert ulps <= 3 and tiny <= 1e-37
    special = np.array([[np.nan, np.inf, -np.inf, 0.0, 88.5, -88.5, 1e30, -1e30]], np.float32)
    np.testing.assert_array_equal(fused(special), [[np.nan, 1, 0, 0.5, 1, 0, 1, 0]])

    source = inspect.getsource(K._sigmoid_row_f32)
    assert "4.1665795894e-2" in source
    namespace = dict(vars(K))
    exec(source.replace("4.1665795894e-2", "0.0"), namespace)  # noqa: S102 - the negative control
    broken_row = njit(namespace["_sigmoid_row_f32"])

    def broken(a):
        out = np.empty_like(a)
        for r in range(a.shape[0]):
            broken_row(a, zero_b, r, out)
        return out

    assert _sigmoid_errors(broken, x)[0] > 3


def test_conv_direct_and_im2col_kernels_agree():
    from implementations.numba import kernels as K

    rng = np.random.default_rng(0)
    x = rng.random((3, 7, 6, 4))
    w = rng.random((5, 4, 3, 3))
    b = rng.random(5)
    wm = np.ascontiguousarray(w.transpose(0, 2, 3, 1).reshape(5, -1))
    for p in (0, 1):
        a = K.conv_im2col_forward(x, wm, b, 3, p)
        d = K.conv_direct_forward(x, np.ascontiguousarray(w.transpose(2, 3, 1, 0)), b, 3, p)
        np.testing.assert_allclose(a, d, rtol=1e-12)


COMPILE_PROFILE = """
name = "numba-compile"
models = ["tiny-mlp"]
dtypes = ["float32"]
parts = ["speed"]
timeout_s = 600
[speed]
phases = ["forward", "train_step"]
batch_sizes = [8]
warmup_rounds = 1
min_rounds = 3
max_rounds = 3
round_min_s = 0.0
target_s = 0.0
[peak]
gemm_n = 64
rounds = 2
[accuracy]
epochs = 1
[overrides.numba]
cache_env = "NUMBA_CACHE_DIR"
"""


# ---------------------------------------------------------------------------- NaN, as the reference
def _nan_pool_input(shape, dtype, seed=3):
    """NHWC values in -2..2 (many ties) with NaN in the first cell of one window, the last cell of
    another, and cells 1 and 2 of a third (the first of them is that window's argmax)."""
    x = np.random.default_rng(seed).integers(-2, 3, size=shape).astype(dtype)
    x[0, 0, 0, 0] = np.nan  # window (0, 0), cell 0
    x[-1, 1, 1, -1] = np.nan  # window (0, 0), cell 3
    x[0, 2, 3, 0] = x[0, 3, 2, 0] = np.nan  # window (1, 1), cells 1 and 2
    return x


NAN_WINDOWS = [(0, 0, 0, 0), (-1, 0, 0, -1), (0, 1, 1, 0)]


def _nan_skipping_pool(x):
    """A 2x2 max-pool whose strict ``>`` scan skips a NaN after the first cell: the negative control."""
    ho, wo = x.shape[1] // 2, x.shape[2] // 2
    cells = [x[:, i : 2 * ho : 2, j : 2 * wo : 2, :] for i, j in ((0, 0), (0, 1), (1, 0), (1, 1))]
    best = cells[0].copy()
    for c in cells[1:]:
        best = np.where(c > best, c, best)
    return best


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (2, 4, 6, 1)])
def test_maxpool_propagates_nan_like_the_reference(shape, dtype):
    """A NaN in a window gives NaN out and is the window's argmax (its first NaN), as in the reference."""
    from implementations.numba import kernels as K
    from implementations.numpy import cnn

    x = _nan_pool_input(shape, dtype)
    ref, ref_arg = cnn.maxpool_forward(x)
    assert all(np.isnan(ref[w]) for w in NAN_WINDOWS)  # positive control: the reference propagates them
    assert not np.array_equal(_nan_skipping_pool(x), ref, equal_nan=True)  # negative control: skipping NaN shows
    out, arg = K.maxpool_forward(x)
    np.testing.assert_array_equal(out, ref)  # NaN where the reference has NaN, equal values elsewhere
    np.testing.assert_array_equal(arg, ref_arg)
    dy = np.random.default_rng(4).normal(size=out.shape).astype(dtype)
    dx = K.maxpool_backward(arg, dy, x.shape[1], x.shape[2])
    np.testing.assert_array_equal(dx, cnn.maxpool_backward(ref_arg, x.shape, dy))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_fused_bias_relu_pool_propagates_nan_like_the_reference(dtype):
    """The fused conv block's bias + relu + pool (and its backward) against the reference's relu + pool."""
    from implementations.numba import conv_pool
    from implementations.numpy import cnn

    z = _nan_pool_input((2, 5, 7, 3), dtype)  # the conv output before its bias
    b = np.array([0.25, -0.5, 0.75], dtype=dtype)
    ref, cache = cnn.relu_pool_forward(z + b)
    assert all(np.isnan(ref[w]) for w in NAN_WINDOWS)  # positive control
    assert not np.array_equal(np.maximum(_nan_skipping_pool(z + b), 0), ref, equal_nan=True)  # negative control
    out, arg = np.empty(ref.shape, dtype=dtype), np.empty(ref.shape, dtype=np.int8)
    conv_pool.bias_relu_pool(z, b, out, arg)
    np.testing.assert_array_equal(out, ref)
    routed = ~(ref <= 0)  # where the gradient flows or the window is NaN (a window <= 0 routes nothing)
    np.testing.assert_array_equal(arg[routed], cache.arg[routed])
    dy = np.random.default_rng(4).normal(size=out.shape).astype(dtype)
    dz, db = np.empty(z.shape, dtype=dtype), np.zeros(b.shape, dtype=np.float64)  # db accumulates
    conv_pool.pool_relu_grad_bias(dy, arg, out, dz, db)
    ref_dz = cnn.relu_pool_backward(cache, dy)
    np.testing.assert_array_equal(dz, ref_dz)
    np.testing.assert_allclose(db, ref_dz.sum(axis=(0, 1, 2)), rtol=1e-6)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_nan_pixel_propagates_through_conv_relu_pool_like_the_reference(dtype):
    """Layer by layer (relu and pool run unfused here): a NaN pixel poisons the same activations."""
    spec = preset("tiny-cnn")
    params = init_params(spec, 0, bias="uniform")
    x = np.random.default_rng(0).random((2, *spec.input_shape))
    x[0, 0, 4, 4] = np.nan
    got = NB.build(spec, params, dtype).activations(x)
    want = backends.get("numpy").build(spec, params, "float64").activations(x)
    for k in range(3):  # conv, relu, pool
        assert np.isnan(want[k][0]).any() and not np.isnan(want[k][1]).any(), k  # positive control
        np.testing.assert_array_equal(np.isnan(got[k]), np.isnan(want[k]), err_msg=f"activation {k}")
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6, equal_nan=True)


@pytest.mark.slow
def test_compile_time_measured_apart_by_the_run(tmp_path):
    """JIT cost is the run's own cold / warm-cache probe (``bench.measure.worker``'s first calls in a
    fresh process over an empty ``NUMBA_CACHE_DIR``, then again over the filled one), the same
    as the quick/standard/full profiles record for numba; nothing numba-specific measures it."""
    import json

    from bench.__main__ import main as bench_main

    prof = tmp_path / "numba-compile.toml"
    prof.write_text(COMPILE_PROFILE)
    out = tmp_path / "runs"
    argv = ["run", "--profile", str(prof), "--impls", "numba", "--out", str(out), "--no-report", "--threads", "1"]
    assert bench_main(argv) == 0
    recs = [json.loads(line) for line in ((out / "latest").resolve() / "results.jsonl").read_text().splitlines()]
    comp = {r["phase"]: r for r in recs if r["kind"] == "compile" and r["impl"] == "numba"}
    assert set(comp) == {"build", "forward", "train_step"}
    cold = sum(r["cold_s"] for r in comp.values())
    warm = sum(r["warm_cache_s"] for r in comp.values())
    assert cold > warm > 0, (cold, warm)  # kernels compiled, then loaded from the on-disk cache
    assert comp["forward"]["cold_s"] + comp["train_step"]["cold_s"] > 10 * comp["train_step"]["steady_s"]
