"""The CuPy backend without a GPU (and without CuPy installed).

- ``available()``/``build()``/``settings()`` on a machine without CuPy or without a device:
  the real reason, no crash (fake ``cupy`` modules cover each failure mode, and one that
  works as the negative control).
- ``CupyModel`` itself runs with ``xp=numpy`` and the NumPy twins of its kernels, checked
  by the harness's agreement check (``bench.check.agreement.check("cupy", ...)`` with the backend's
  ``build`` swapped for the CPU one: the one tolerance table, dtype checks, fresh batches)
  on every preset; the same class also runs on the *CUDA source* compiled for the CPU
  (``"emulated"`` kernels, needs a C++ compiler). The whole run (``python -m bench run``,
  the GPU report on a GPU machine) also runs it through a worker on the CPU.
- Each kernel's CUDA source (emulated) is checked against its twin, ties/NaN/floors included.
- Negative controls: a broken twin, a broken pool routing, a perturbed weight, mutated CUDA
  source: each must fail.
"""

from __future__ import annotations

import subprocess
import sys
import time
import types

import numpy as np
import pytest

import implementations.cupy as backend
from bench.check.agreement import AgreementResult, check, sample_batch
from bench.core.params import init_params
from bench.plan import backends
from bench.plan.presets import preset
from implementations.cupy import kernels as K
from implementations.cupy.model import CupyModel
from implementations.numpy import cnn
from implementations.numpy.model import XpModel

PRESETS = ("tiny-mlp", "tiny-cnn", "mlp", "mlp-relu", "cnn", "dnn")
needs_cxx = pytest.mark.skipif(K.compiler() is None, reason="no C++ compiler for the CUDA-source emulation")


def twin_build(spec, params, dtype):
    return CupyModel(spec, params, dtype, xp=np)


def emulated_build(spec, params, dtype):
    return CupyModel(spec, params, dtype, xp=np, kernels=K.make_kernels("emulated", dtype))


def agree(monkeypatch, build, name: str, dtype: str, **kw) -> AgreementResult:
    """``bench.check.agreement.check("cupy", ...)`` with the backend's ``build`` replaced by ``build``."""
    monkeypatch.setattr(backend, "build", build)
    return check("cupy", preset(name), dtype, **kw)


# ---------------------------------------------------------------------- availability
class CUDARuntimeError(RuntimeError):
    """Stands in for cupy_backends.cuda.api.runtime.CUDARuntimeError."""


def fake_cupy(count=1, count_error: str | None = None, probe_error: str | None = None, driver: int = 12040):
    """A ``cupy`` module stand-in: NumPy arrays, scripted device query and probe failures."""

    def get_count():
        if count_error:
            raise CUDARuntimeError(count_error)
        return count

    def arange(*a, **kw):
        if probe_error:
            raise RuntimeError(probe_error)
        return np.arange(*a, **kw)

    runtime = types.SimpleNamespace(
        getDeviceCount=get_count,
        driverGetVersion=lambda: driver,
        runtimeGetVersion=lambda: 12090,
        getDeviceProperties=lambda i: {"name": b"FakeGPU 9000"},
    )
    device = types.SimpleNamespace(id=0, compute_capability="90")
    mod = types.ModuleType("cupy")
    mod.__version__ = "0.0-fake"
    mod.cuda = types.SimpleNamespace(runtime=runtime, Device=lambda: device)
    mod.arange, mod.float32 = arange, np.float32
    return mod


def test_available_here_is_fast_and_gives_a_reason():
    t0 = time.perf_counter()
    ok, reason = backend.available()
    elapsed = time.perf_counter() - t0
    assert isinstance(ok, bool) and isinstance(reason, str) and reason
    assert elapsed < 30, f"available() took {elapsed:.1f} s"
    if ok:
        pytest.skip(f"a usable GPU is present ({reason}); the no-GPU paths are covered with fakes")
    assert any(w in reason for w in ("cupy", "CUDA")), reason


@pytest.fixture
def cupy_only_registry(monkeypatch):
    """The registry restricted to numpy + cupy (the other backends import big frameworks)."""
    only = {"numpy": "implementations.numpy", "cupy": "implementations.cupy"}
    monkeypatch.setattr(backends, "registry", lambda: dict(only))


def test_registry_reports_the_same_reason(cupy_only_registry):
    assert backends.get("cupy") is backend
    assert backends.available()["cupy"] == backend.available()
    assert backend.REQUIRES == ("gpu",)


def test_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)
    ok, reason = backend.available()
    assert not ok
    assert reason.startswith("cupy not installed or not importable: ModuleNotFoundError: import of cupy halted"), reason
    assert "cupy" in backend.settings()["library"] and backend.settings()["device"].startswith("unavailable:")


@pytest.mark.parametrize(
    "fake, expected",
    [
        (dict(count_error="cudaErrorInsufficientDriver: CUDA driver version is insufficient", driver=0),
         "CUDA driver missing or too old: CUDARuntimeError: cudaErrorInsufficientDriver"),
        (dict(count_error="cudaErrorNoDevice: no CUDA-capable device is detected"),
         "no CUDA device: CUDARuntimeError: cudaErrorNoDevice"),
        (dict(count=0), "no CUDA device (getDeviceCount() returned 0)"),
        (dict(probe_error="nvrtc: error: failed to load libnvrtc"),
         "tiny CuPy kernel launch failed: RuntimeError: nvrtc: error: failed to load libnvrtc"),
        (dict(count_error="cudaErrorUnknown: unknown error"), "CUDA device query failed: CUDARuntimeError"),
    ],
)  # fmt: skip
def test_failure_modes_give_the_real_reason(monkeypatch, fake, expected):
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy(**fake))
    ok, reason = backend.available()
    assert not ok and reason.startswith(expected), reason
    if fake.get("driver") == 0:
        assert "no NVIDIA driver is loaded" in reason
    with pytest.raises(backend.CupyUnavailable, match="cupy backend unavailable: ") as info:
        backend.build(preset("tiny-mlp"), init_params(preset("tiny-mlp")), "float32")
    # unavailable is not "not implemented": the worker must not record it as not_implemented
    assert not isinstance(info.value, NotImplementedError) and expected in str(info.value)


def test_working_device_is_reported_available(monkeypatch):
    """Negative control for the failure modes: a device that works is available."""
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy())
    ok, reason = backend.available()
    assert ok, reason
    assert reason == "cupy 0.0-fake on FakeGPU 9000 (compute capability 90)"


def test_broken_availability_check_is_caught_by_registry(monkeypatch, cupy_only_registry):
    monkeypatch.setattr(backend, "available", lambda: 1 / 0)
    ok, reason = backends.available()["cupy"]
    assert not ok and "ZeroDivisionError" in reason


def test_modules_do_not_import_cupy():
    code = (
        "import sys; import implementations.cupy, implementations.cupy.kernels, implementations.cupy.model; "
        "assert 'cupy' not in sys.modules, 'imported'"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


# ---------------------------------------------------------------------- the GPU report is the normal run
CUPY_TWIN = """
    REQUIRES = ()
    def available(): return True, "CupyModel with xp=numpy and its NumPy twin kernels, on the CPU"
    def settings(): return {"device": "cpu (twin kernels)"}
    def build(spec, params, dtype="float32", seed=0):
        import numpy as np
        from implementations.cupy.model import CupyModel
        return CupyModel(spec, params, dtype, xp=np, seed=seed)
"""
RUN_PROFILE = """
    name = "cupy-twin"
    models = ["tiny-mlp", "tiny-cnn"]
    dtypes = ["float32"]
    parts = ["agreement", "speed"]
    timeout_s = 120
    [agreement]
    batch = 4
    [speed]
    phases = ["forward", "train_step"]
    batch_sizes = [4]
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
"""


def test_cupy_model_through_the_normal_run(tmp_path, monkeypatch):
    """The GPU report is ``python -m bench run --impls cupy,torch-cuda``: the same worker,
    ``bench.check.agreement.check`` and ``bench.measure.timing.Timer`` as every backend. Here the real
    cupy backend is skipped with its reason and ``CupyModel`` on the CPU (registered as
    ``cupy_twin``) goes through both parts."""
    import json
    import textwrap

    from bench.__main__ import main as bench_main

    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "cupy_twin.py").write_text(textwrap.dedent(CUPY_TWIN))
    monkeypatch.syspath_prepend(str(mods))
    monkeypatch.setenv("PYTHONPATH", str(mods))
    monkeypatch.setitem(backends._extra, "cupy_twin", "cupy_twin")
    prof = tmp_path / "cupy-twin.toml"
    prof.write_text(textwrap.dedent(RUN_PROFILE))
    out = tmp_path / "runs"
    argv = ["run", "--profile", str(prof), "--impls", "cupy,cupy_twin", "--out", str(out), "--no-report"]
    assert bench_main([*argv, "--threads", "1"]) == 0
    run_dir = (out / "latest").resolve()
    recs = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    avail = {r["impl"]: r for r in recs if r["kind"] == "availability"}
    ok, reason = backend.available()
    assert avail["cupy"]["available"] is ok and avail["cupy"]["reason"] == reason
    agreement = [r for r in recs if r["kind"] == "agreement" and r["impl"] == "cupy_twin"]
    assert {r["model"] for r in agreement} == {"tiny-mlp", "tiny-cnn"} and all(r["ok"] for r in agreement)
    speed = {(r["model"], r["phase"]): r for r in recs if r["kind"] == "speed" and r["impl"] == "cupy_twin"}
    assert set(speed) == {(m, p) for m in ("tiny-mlp", "tiny-cnn") for p in ("forward", "train_step")}
    assert all(r["validated"] is True and r["rounds"] == 3 and r["median_s"] > 0 for r in speed.values())
    assert not [r for r in recs if r["kind"] == "error" and r["impl"] == "cupy_twin"]


def test_project_agreement_check_passes_with_twins(monkeypatch):
    """``bench.check.agreement.check("cupy", ...)`` (what the harness runs) on the twin model."""
    for name in ("tiny-mlp", "tiny-cnn"):
        for dtype in ("float64", "float32"):
            res = agree(monkeypatch, twin_build, name, dtype)
            assert res.passed and res.error is None, res.format(verbose=True)


# ---------------------------------------------------------------------- the model on the CPU
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", PRESETS)
def test_twin_model_agrees_with_reference(monkeypatch, name, dtype):
    res = agree(monkeypatch, twin_build, name, dtype)
    assert res.passed, res.format(verbose=True)


@needs_cxx
@pytest.mark.parametrize(
    "name, dtype", [("tiny-mlp", "float64"), ("tiny-mlp", "float32"), ("tiny-cnn", "float64"),
                    ("tiny-cnn", "float32"), ("cnn", "float64"), ("mlp-relu", "float32")],
)  # fmt: skip
def test_emulated_cuda_model_agrees_with_reference(monkeypatch, name, dtype):
    """The whole model on the CUDA kernel source compiled for the CPU."""
    res = agree(monkeypatch, emulated_build, name, dtype, batch=4)
    assert res.passed, res.format(verbose=True)


@pytest.mark.parametrize("provider", ["numpy", pytest.param("emulated", marks=needs_cxx)])
@pytest.mark.parametrize("name", ["tiny-mlp", "tiny-cnn", "mlp"])
def test_train_step_with_dropout_matches_reference(name, provider):
    """Dropout on: the same uniforms are drawn in the same order, so the steps coincide."""
    spec = preset(name)
    params = init_params(spec, 1, bias="uniform")
    x, y = sample_batch(spec, 6, 1)
    model = CupyModel(spec, params, "float64", xp=np, kernels=K.make_kernels(provider, "float64"), seed=3)
    ref = XpModel(spec, params, "float64", seed=3)
    xd, yd = model.to_device(x), model.to_device(y)
    for _ in range(3):
        assert model.train_step(xd, yd) is None
        ref.train_step(ref.to_device(x), ref.to_device(y))
    for k, v in ref.params().items():
        np.testing.assert_allclose(model.params()[k], v, rtol=1e-12, atol=1e-14, err_msg=k)
    assert any(not np.allclose(v, params[k]) for k, v in model.params().items())  # it did train


class BrokenSigmoidGrad(K.TwinKernels):
    def act_backward(self, kind, out, dy, mask=None):
        dx = super().act_backward(kind, out, dy, mask)
        return dx / (1 - out) if kind == "sigmoid" else dx  # drops the (1 - out) factor


class BrokenPoolRouting(K.TwinKernels):
    def maxpool_forward(self, x):
        y, arg = super().maxpool_forward(x)
        return y, np.zeros_like(arg)  # routes every gradient to the top-left cell


@pytest.mark.parametrize(
    "name, table, phase", [("tiny-mlp", BrokenSigmoidGrad, "grad"), ("tiny-cnn", BrokenPoolRouting, "grad")]
)
def test_negative_control_broken_kernel_fails(monkeypatch, name, table, phase):
    def build(spec, params, dtype):
        return CupyModel(spec, params, dtype, xp=np, kernels=table(dtype))

    bad = agree(monkeypatch, build, name, "float32").failures()
    assert any(r["phase"] == phase for r in bad), "a broken kernel went unnoticed"


def test_negative_control_perturbed_weight_fails(monkeypatch):
    def build(spec, params, dtype):
        m = twin_build(spec, params, dtype)
        m.w["1.W"][0, 0] += 1e-7
        return m

    bad = agree(monkeypatch, build, "tiny-mlp", "float64").failures()
    assert {r["phase"] for r in bad} >= {"forward", "grad", "params"}


def test_to_device_converts_once_on_device():
    spec = preset("tiny-cnn")
    model = twin_build(spec, init_params(spec), "float32")
    x = np.random.default_rng(0).integers(0, 255, (3, 1, 10, 10)).astype(np.uint8)
    xd = model.to_device(x)
    assert xd.dtype == np.float32 and xd.shape == (3, 10, 10, 1) and xd.flags.c_contiguous
    np.testing.assert_array_equal(xd, XpModel(spec, init_params(spec), "float32").to_device(x))
    yd = model.to_device(np.eye(10)[:3])
    assert yd.dtype == np.float32 and yd.shape == (3, 10)
    model.sync()  # a no-op with NumPy


def test_fusion_plan():
    spec = preset("mlp")  # flatten, dense, sigmoid, dropout, dense, sigmoid, dropout, dense, softmax
    model = twin_build(spec, init_params(spec), "float32")
    assert model.act_after == [None, "sigmoid", None, None, "sigmoid", None, None, None, None]
    assert [i for i, d in enumerate(model.drop_after) if d] == [2, 5]
    assert isinstance(model.k, K.TwinKernels)
    with pytest.raises(KeyError, match="valid: numpy, cuda, emulated"):
        K.make_kernels("opencl", "float32")


# ---------------------------------------------------------------------- kernels: CUDA source vs twin
RTOL = {"float64": 1e-14, "float32": 2e-6}


def ew_inputs(name: str, dtype: str, rng) -> list:
    spec = K.ELEMENTWISE[name]
    scalars = {"rate": 0.4, "scale": 1 / 0.6, "lr": 0.1}
    args = []
    for p in spec.inputs:
        if p in scalars:
            args.append(scalars[p])
        elif p == "b":
            args.append(rng.normal(size=7).astype(dtype))
        elif p == "out" and "sigmoid" in name:
            args.append(rng.random((5, 7)).astype(dtype))
        elif p == "out" and "relu" in name:
            args.append(np.maximum(rng.normal(size=(5, 7)), 0).astype(dtype))  # zeros included
        elif p == "m":
            args.append(((rng.random((5, 7)) > 0.4) / 0.6).astype(dtype))
        else:
            args.append(rng.normal(size=(5, 7)).astype(dtype))
    if name in K.INPLACE:
        args.append(rng.normal(size=(5, 7)).astype(dtype))
    return args


@needs_cxx
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", list(K.ELEMENTWISE))
def test_elementwise_source_matches_twin(name, dtype):
    rng = np.random.default_rng(7)
    args = ew_inputs(name, dtype, rng)
    emu, twin = K.make_kernels("emulated", dtype), K.make_kernels("numpy", dtype)
    a = [v.copy() if isinstance(v, np.ndarray) else v for v in args]
    got, want = emu._ew(name, *a), twin._ew(name, *args)
    assert len(got) == len(want) == len(K.ELEMENTWISE[name].outputs)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == np.dtype(dtype) and w.dtype == np.dtype(dtype)
        np.testing.assert_allclose(g, w, rtol=RTOL[dtype], atol=RTOL[dtype])


def pool_input(shape, rng, dtype):
    x = rng.integers(-2, 3, size=shape).astype(dtype)  # many ties
    x[0, 0, 0, 0] = np.nan  # first cell of its window
    x[-1, 1, 1, -1] = np.nan  # last cell of its window
    return x


@needs_cxx
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", [(2, 5, 7, 3), (2, 4, 6, 1), (1, 3, 3, 2)])
def test_maxpool_source_matches_twin_and_reference(shape, dtype):
    rng = np.random.default_rng(3)
    x = pool_input(shape, rng, dtype)
    emu = K.make_kernels("emulated", dtype)
    y, arg = emu.maxpool_forward(x)
    ty, targ = K.twin_maxpool_forward(x)
    ry, rarg = cnn.maxpool_forward(x)  # the reference: first max wins, NaN wins
    np.testing.assert_array_equal(y, ty)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(arg, targ)
    np.testing.assert_array_equal(arg, rarg)
    dy = rng.normal(size=y.shape).astype(dtype)
    dx = emu.maxpool_backward(arg, x.shape, dy)
    np.testing.assert_array_equal(dx, K.twin_maxpool_backward(targ, x.shape, dy))
    np.testing.assert_array_equal(dx, cnn.maxpool_backward(rarg, x.shape, dy))


CONV_CASES = [
    ((2, 6, 5, 3), 3, "same"),
    ((2, 6, 5, 3), 3, "valid"),
    ((1, 7, 7, 2), 5, "same"),
    ((3, 4, 4, 1), 1, "same"),
]


@needs_cxx
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape, k, padding", CONV_CASES)
def test_im2col_col2im_source_match_twin(shape, k, padding, dtype):
    rng = np.random.default_rng(5)
    x = rng.normal(size=shape).astype(dtype)
    emu = K.make_kernels("emulated", dtype)
    cols, dims = emu.im2col(x, k, padding)
    tcols, tdims = cnn.im2col(x, k, padding)
    assert dims == tdims
    np.testing.assert_array_equal(cols, tcols)
    dcols = rng.normal(size=cols.shape).astype(dtype)
    np.testing.assert_array_equal(emu.col2im(dcols, x.shape, k, padding), cnn.col2im(dcols, x.shape, k, padding))


@needs_cxx
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("loss", ["mse", "cross_entropy"])
def test_softmax_head_source_matches_twin(loss, dtype):
    rng = np.random.default_rng(11)
    z = (rng.normal(size=(6, 10)) * 4).astype(dtype)
    y = np.eye(10, dtype=dtype)[rng.integers(0, 10, 6)]
    got = K.make_kernels("emulated", dtype).softmax_head(loss, z, y)
    want = K.make_kernels("numpy", dtype).softmax_head(loss, z, y)
    for g, w, what in zip(got, want, ("loss", "p", "dz"), strict=True):
        np.testing.assert_allclose(g, w, rtol=10 * RTOL[dtype], atol=RTOL[dtype] * np.abs(w).max(), err_msg=what)


@needs_cxx
@pytest.mark.parametrize(
    "original, mutant, check",
    [
        ("const int oh = ih - ki + pad;", "const int oh = ih + ki - pad;", "col2im"),
        ("if (v > best || (v != v && best == best))", "if (v >= best || (v != v && best == best))", "maxpool"),
        ("const int ih = oh + ki - pad, iw = ow + kj - pad;", "const int ih = oh + ki - pad, iw = ow + ki - pad;",
         "im2col"),
    ],
)  # fmt: skip
def test_negative_control_mutated_cuda_source_fails(original, mutant, check):
    assert K.RAW_SOURCE.count(original) == 1
    emu = K.EmulatedKernels("float64", raw_source=K.RAW_SOURCE.replace(original, mutant))
    rng = np.random.default_rng(5)
    if check == "maxpool":
        x = pool_input((2, 5, 7, 3), rng, "float64")
        assert not np.array_equal(emu.maxpool_forward(x)[1], K.twin_maxpool_forward(x)[1])
        return
    x = rng.normal(size=(2, 6, 5, 3))
    cols, _ = cnn.im2col(x, 3, "same")
    if check == "im2col":
        assert not np.array_equal(emu.im2col(x, 3, "same")[0], cols)
    else:
        assert not np.allclose(emu.col2im(cols, x.shape, 3, "same"), cnn.col2im(cols, x.shape, 3, "same"))


def test_cupy_model_runs_the_shared_adam():
    """CupyModel inherits XpModel's Adam (``implementations.optim``): with ``xp=numpy`` its
    3-step float64 trajectory on ``dnn`` matches the NumPy reference's."""
    spec = preset("dnn")
    params = init_params(spec, 0, bias="uniform")
    model, ref = twin_build(spec, params, "float64"), XpModel(spec, params, "float64")
    for k in range(3):
        x, y = sample_batch(spec, 4, k)
        assert model.optimizer_step(x, y) == pytest.approx(ref.optimizer_step(x, y), rel=1e-12)
    got, want = model.params(), ref.params()
    assert model.adam is not None and model.adam.t == 3
    assert all(np.abs(got[k] - want[k]).max() <= 1e-12 * np.abs(want[k]).max() for k in want)
