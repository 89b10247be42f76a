"""The CuPy backend without a GPU (and without CuPy installed).

- ``available()``/``build()``/``settings()`` on a machine without CuPy or without a device:
  the real reason, no crash (fake ``cupy`` modules cover each failure mode, and one that
  works as the negative control).
- ``CupyModel`` itself runs with ``xp=numpy`` and the NumPy twins of its kernels, checked
  against the float64 reference on every preset; the same class also runs on the *CUDA
  source* compiled for the CPU (``"emulated"`` kernels, needs a C++ compiler).
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

import implementations
import implementations.cupy as backend
from bench.params import init_params
from bench.spec import preset
from implementations.cupy import gpu_report
from implementations.cupy import kernels as K
from implementations.cupy.check import TOLERANCES, Tolerance, batch, compare, failures
from implementations.cupy.model import CupyModel
from implementations.numpy import cnn
from implementations.numpy.model import XpModel

PRESETS = ("tiny-mlp", "tiny-cnn", "mlp", "mlp-relu", "cnn")
SAME_MATH = Tolerance(forward=1e-12, loss=1e-12, grad=1e-12, params=1e-12)  # float64, same operations
needs_cxx = pytest.mark.skipif(K.compiler() is None, reason="no C++ compiler for the CUDA-source emulation")


def twin_build(spec, params, dtype):
    return CupyModel(spec, params, dtype, xp=np)


def emulated_build(spec, params, dtype):
    return CupyModel(spec, params, dtype, xp=np, kernels=K.make_kernels("emulated", dtype))


def tol_for(dtype: str) -> Tolerance:
    return SAME_MATH if dtype == "float64" else TOLERANCES[dtype]


def describe(rows: list[dict]) -> str:
    return "; ".join(f"{r['tensor']}({r['phase']}) rel {r['max_rel']:.2e} > {r['tol']:.0e}" for r in failures(rows))


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
    monkeypatch.setattr(
        implementations, "_REGISTRY", {"numpy": "implementations.numpy", "cupy": "implementations.cupy"}
    )


def test_registry_reports_the_same_reason(cupy_only_registry):
    assert implementations.get("cupy") is backend
    assert implementations.available()["cupy"] == backend.available()
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
    ok, reason = implementations.available()["cupy"]
    assert not ok and "ZeroDivisionError" in reason


def test_modules_do_not_import_cupy():
    code = (
        "import sys; import implementations.cupy, implementations.cupy.kernels, implementations.cupy.model, "
        "implementations.cupy.check, implementations.cupy.gpu_report; assert 'cupy' not in sys.modules, 'imported'"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


# ---------------------------------------------------------------------- gpu_report without a GPU
def test_gpu_report_refuses_without_gpu(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(backend, "available", lambda: (False, "no CUDA device: fake reason"))
    out = tmp_path / "report"
    assert gpu_report.main(["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "cupy is unavailable here, nothing measured: no CUDA device: fake reason" in err
    assert not out.exists()


def test_gpu_report_cli_exit_status(tmp_path):
    ok, reason = backend.available()
    if ok:
        pytest.skip(f"a GPU is present ({reason}); the CLI would run the real report")
    out = tmp_path / "report"
    res = subprocess.run(
        [sys.executable, "-m", "implementations.cupy.gpu_report", "--out", str(out)], capture_output=True, text=True
    )
    assert res.returncode == 2 and reason in res.stderr and not out.exists()


def test_gpu_report_markdown_and_ratios():
    """The report's formatting on made-up rows (no measurement involved)."""
    medians = [
        {"model": "mlp", "impl": "cupy", "batch": 50, "median_ms": 2.0, "min_ms": 1.9, "max_ms": 2.5},
        {"model": "mlp", "impl": "torch-cuda", "batch": 50, "median_ms": 1.0, "min_ms": 0.9, "max_ms": 1.1},
    ]
    (r,) = gpu_report.ratios(medians)
    assert r["ratio"] == 0.5 and r["met"] == "no" and r["goal"] == 0.8
    agree = [{"preset": "mlp", "dtype": "float32", "tensor": "0.W", "phase": "grad", "max_rel": 2e-4, "tol": 1e-4,
              "ok": False}]  # fmt: skip
    md = gpu_report.markdown({"device": "FakeGPU"}, agree, medians, {"torch-cuda": "x"}, {}, ["--out", "r"])
    assert md.startswith("# CuPy GPU report: FakeGPU") and "| mlp | float32 | **no** | 0.W (grad) |" in md
    assert "| mlp | 2.000 | 1.000 | 0.50 | 0.8 | no |" in md
    assert gpu_report.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"


def test_gpu_report_end_to_end_with_twins(monkeypatch, tmp_path, cupy_only_registry):
    """The whole report path on the CPU: cupy faked by the twin model, tiny sizes."""
    monkeypatch.setattr(backend, "available", lambda: (True, "cupy fake on FakeGPU"))
    monkeypatch.setattr(backend, "build", twin_build)
    monkeypatch.setattr(backend, "settings", lambda: {"device": "FakeGPU"})
    monkeypatch.setattr(gpu_report, "device_info", lambda: {"device": "FakeGPU 9000", "cupy": "fake"})
    monkeypatch.chdir(tmp_path)
    args = ["--models", "tiny-mlp", "tiny-cnn", "--presets", "tiny-mlp", "tiny-cnn"]
    assert gpu_report.main([*args, "--warmup", "1", "--repeats", "3", "--inner", "2"]) == 0
    out = tmp_path / "reports" / "gpu-fakegpu-9000"
    md = (out / "report.md").read_text()
    assert md.startswith("# CuPy GPU report: FakeGPU 9000")
    assert "| tiny-cnn | float32 | yes |" in md and "**no**" not in md
    assert len((out / "speed_raw.csv").read_text().splitlines()) == 1 + 2 * 3  # header + models * repeats
    header = (out / "agreement.csv").read_text().splitlines()[0]
    assert header.startswith("preset,dtype,tensor,phase")
    assert "Skipped: torch-cuda: KeyError" in md  # not in the restricted registry: skipped, with why


def test_project_agreement_check_passes_with_twins(monkeypatch):
    """``bench.agreement.check("cupy", ...)`` (what the harness runs) on the twin model."""
    from bench import agreement

    monkeypatch.setattr(backend, "build", twin_build)
    for name in ("tiny-mlp", "tiny-cnn"):
        for dtype in ("float64", "float32"):
            res = agreement.check("cupy", preset(name), dtype)
            assert res.passed and res.error is None, (name, dtype, res.error)


# ---------------------------------------------------------------------- the model on the CPU
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", PRESETS)
def test_twin_model_agrees_with_reference(name, dtype):
    rows = compare(twin_build, preset(name), dtype, tol=tol_for(dtype))
    assert not failures(rows), describe(rows)


@needs_cxx
@pytest.mark.parametrize(
    "name, dtype", [("tiny-mlp", "float64"), ("tiny-mlp", "float32"), ("tiny-cnn", "float64"),
                    ("tiny-cnn", "float32"), ("cnn", "float64"), ("mlp-relu", "float32")],
)  # fmt: skip
def test_emulated_cuda_model_agrees_with_reference(name, dtype):
    """The whole model on the CUDA kernel source compiled for the CPU."""
    rows = compare(emulated_build, preset(name), dtype, n=4, tol=tol_for(dtype))
    assert not failures(rows), describe(rows)


@pytest.mark.parametrize("provider", ["numpy", pytest.param("emulated", marks=needs_cxx)])
@pytest.mark.parametrize("name", ["tiny-mlp", "tiny-cnn", "mlp"])
def test_train_step_with_dropout_matches_reference(name, provider):
    """Dropout on: the same uniforms are drawn in the same order, so the steps coincide."""
    spec = preset(name)
    params = init_params(spec, 1, bias="uniform")
    x, y = batch(spec, 6)
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
def test_negative_control_broken_kernel_fails(name, table, phase):
    def build(spec, params, dtype):
        return CupyModel(spec, params, dtype, xp=np, kernels=table(dtype))

    bad = failures(compare(build, preset(name), "float32"))
    assert any(r["phase"] == phase for r in bad), "a broken kernel went unnoticed"


def test_negative_control_perturbed_weight_fails():
    def build(spec, params, dtype):
        m = twin_build(spec, params, dtype)
        m.w["1.W"][0, 0] += 1e-7
        return m

    bad = failures(compare(build, preset("tiny-mlp"), "float64", tol=SAME_MATH))
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
        x, y = batch(spec, 4, k)
        assert model.optimizer_step(x, y) == pytest.approx(ref.optimizer_step(x, y), rel=1e-12)
    got, want = model.params(), ref.params()
    assert model.adam is not None and model.adam.t == 3
    assert all(np.abs(got[k] - want[k]).max() <= 1e-12 * np.abs(want[k]).max() for k in want)
