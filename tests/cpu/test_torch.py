"""PyTorch backends (torch, torch-compile, torch-cuda's CPU-side behaviour) against the
NumPy float64 reference. torch is imported inside the tests, never at collection."""

import numpy as np
import pytest

from bench.check.agreement import TOLERANCES, check, rel_error, sample_batch
from bench.core.params import init_params
from bench.core.threads import configured_threads
from bench.plan import backends
from bench.plan.presets import preset, random_spec


def _rel(a, b) -> float:
    return rel_error(a, b)[1]


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_reference_on_random_specs(seed):
    for dtype in ("float64", "float32"):
        res = check("torch", random_spec(seed), dtype, seed=seed, batch=5, steps=2)
        assert res.passed, res.format(verbose=True)


def test_negative_control_a_perturbed_weight_fails():
    spec = preset("tiny-cnn")
    params = init_params(spec, 0, bias="uniform")
    params["3.W"] = params["3.W"] * (1 + 1e-6)  # one conv weight tensor, 1e-6 relative
    res = check("torch", spec, "float64", params=params)
    assert res.passed  # sanity: both sides got the same (perturbed) params
    from implementations.torch import build

    m = build(spec, params, "float64")
    x, _ = sample_batch(spec, 4, 0)
    ref = backends.get("numpy").build(spec, init_params(spec, 0, bias="uniform"), "float64")
    assert _rel(m.forward(x), ref.forward(x)) > TOLERANCES["float64"].forward


def test_negative_control_an_untransposed_dense_weight_fails(monkeypatch):
    """Square dense W (in == out) loaded without the (in, out) -> (out, in) transpose."""
    spec = preset("tiny-mlp").replace(
        layers=[{"type": "flatten"}, {"type": "dense", "units": 64}, {"type": "tanh"}, {"type": "dense", "units": 10}]
    )
    params = init_params(spec, 0, bias="uniform")
    import implementations.torch.model as tm

    real = tm.TorchModel._load

    def no_transpose(self, p):
        real(self, {k: (v.T if k == "1.W" else v) for k, v in p.items()})  # undoes the transpose of 1.W

    assert check("torch", spec, "float64", params=params).passed
    monkeypatch.setattr(tm.TorchModel, "_load", no_transpose)
    res = check("torch", spec, "float64", params=params)
    assert not res.passed and res.first_divergent_layer == 1


def test_train_step_is_spec_lr_sgd_without_dropout_and_dropout_is_active():
    spec = preset("tiny-mlp")
    no_drop = spec.replace(layers=[d for d in spec.to_dict()["layers"] if d["type"] != "dropout"])
    x, y = sample_batch(spec, 8, 3)
    from implementations.torch import build

    for s in (no_drop,):
        params = init_params(s, 0, bias="uniform")
        m, ref = build(s, params, "float64"), backends.get("numpy").build(s, params, "float64")
        for _ in range(2):
            m.train_step(m.to_device(x), m.to_device(y))
            ref.sgd_step(x, y, s.train.lr)
        got, want = m.params(), ref.params()
        assert max(_rel(got[k], want[k]) for k in want) < 1e-12
    params = init_params(spec, 0, bias="uniform")
    m, ref = build(spec, params, "float64"), backends.get("numpy").build(spec, params, "float64")
    m.train_step(m.to_device(x), m.to_device(y))
    ref.sgd_step(x, y, spec.train.lr)  # the same step with dropout off
    assert _rel(m.params()["1.W"], ref.params()["1.W"]) > 1e-6  # dropout changed the update
    np.testing.assert_array_equal(m.forward(x), m.forward(x))  # forward: dropout off


def test_settings_record_threads_and_numerics():
    import torch

    from implementations.torch import available, settings

    ok, reason = available()
    assert ok and torch.__version__ in reason
    s = settings()
    assert s["threads"] == configured_threads() == torch.get_num_threads()
    for key in ("library", "device", "mkldnn", "tf32_matmul", "tf32_cudnn", "float32_matmul_precision"):
        assert key in s
    assert s["device"] == "cpu" and s["compile"] is False


def test_torch_cuda_is_unavailable_with_the_real_reason_or_runs():
    from implementations.torch import cuda

    ok, reason = cuda.available()
    assert cuda.REQUIRES == ("gpu",)
    if ok:  # a GPU machine: the GPU tests cover it
        return
    assert reason.startswith("no CUDA device"), reason
    spec = preset("tiny-mlp")
    with pytest.raises(NotImplementedError, match="no CUDA device"):
        cuda.build(spec, init_params(spec, 0), "float32")
    assert cuda.settings()["available"] == reason


def test_torch_compile_available_names_the_compiler():
    from implementations.torch import compiled

    ok, reason = compiled.available()
    assert ok, reason
    assert "inductor" in reason


@pytest.mark.slow
def test_torch_compile_agrees_and_reports_compile_time():
    """A real inductor compile (C++ build): tiny-mlp in float64, eval and train graphs."""
    from implementations.torch import compiled

    spec = preset("tiny-mlp")
    res = check("torch-compile", spec, "float64", batch=4, steps=1)
    assert res.passed, res.format(verbose=True)
    params = init_params(spec, 0, bias="uniform")
    m = compiled.build(spec, params, "float64")
    x, y = sample_batch(spec, 4, 1)
    m.train_step(m.to_device(x), m.to_device(y))
    assert set(m.compile_seconds) == {"train"} and m.compile_seconds["train"] > 0
    s = compiled.settings()
    assert s["compile"] is True and s["compile_seconds"] == m.compile_seconds
