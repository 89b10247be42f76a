"""bench.check.agreement: it passes what agrees, and (negative controls) fails what does not."""

import fake_backends
import numpy as np
import pytest

from bench.check.agreement import TOLERANCES, check, compare_tensor, main
from bench.plan import backends
from bench.plan.presets import preset


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setitem(backends._extra, "fake", "fake_backends")
    yield fake_backends.BREAK
    fake_backends.BREAK["kind"] = "weight"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ["tiny-mlp", "tiny-cnn", "mlp", "cnn"])
def test_numpy_agrees_with_itself(name, dtype):
    res = check("numpy", name, dtype)
    assert res.passed, res.format(verbose=True)
    phases = {r["phase"] for r in res.rows}
    assert phases == {"activation", "forward", "loss", "grad", "params"}
    host = [r for r in res.rows if r["phase"] == "grad" and "(timed)" not in r["tensor"]]
    assert len(host) == len(preset(name).param_shapes())
    timed = {r["tensor"] for r in res.rows if "(timed)" in r["tensor"]}
    assert timed == {"probs (timed)", "loss (timed)", "grad norms (timed)"}
    if dtype == "float32":  # float32 really is float32: errors are non-zero, within tolerance
        assert 0 < res.worst()["grad"] <= TOLERANCES["float32"].grad
    else:  # the reference against itself: deterministic, so bit-identical (a non-zero error is a bug)
        assert max(res.worst().values()) == 0.0, res.worst()


def test_a_perturbed_weight_fails_and_the_divergent_layer_is_named(fake):
    fake["kind"] = "weight"
    res = check("fake", "tiny-cnn", "float64")
    assert not res.passed and res.status == "disagrees"
    assert res.first_divergent_layer == 3  # the second conv is layer 3 of tiny-cnn
    assert "first diverging layer: 3 (conv2d)" in res.format()


def test_a_slightly_wrong_gradient_fails_in_float32_too(fake):
    fake["kind"] = "grad_scale"  # 0.1% off on biases: beyond float32's 2e-4 grad tolerance
    res = check("fake", "tiny-mlp", "float32")
    assert not res.passed
    assert {r["tensor"] for r in res.failures()} == {k for k in preset("tiny-mlp").param_shapes() if k.endswith(".b")}


def test_shape_and_dtype_are_checked_before_values(fake):
    fake["kind"] = "transposed_grad"
    res = check("fake", "tiny-mlp", "float64")
    assert any("shape" in r.get("detail", "") for r in res.failures())
    fake["kind"] = "float16_out"
    res = check("fake", "tiny-mlp", "float64")
    assert any("dtype float16" in r.get("detail", "") for r in res.failures())


@pytest.mark.parametrize(("kind", "tensor"), [("timed_forward_off", "probs (timed)"),
                                              ("timed_grad_dropped", "grad norms (timed)")])  # fmt: skip
def test_what_the_harness_times_is_checked_too(fake, kind, tensor):
    """forward and loss_and_grads are timed in their device forms (``device_forward``,
    ``device_loss_and_grads``); a backend whose host contract agrees but whose timed form is
    off (0.1 % on the probs) or drops a gradient fails on that row alone. Positive control:
    the unbroken fake's timed rows pass (``test_numpy_agrees_with_itself`` for numpy itself)."""
    fake["kind"] = kind
    res = check("fake", "tiny-mlp", "float64")
    assert not res.passed and {r["tensor"] for r in res.failures()} == {tensor}
    fake["kind"] = "none"
    assert check("fake", "tiny-mlp", "float64").passed


def test_not_implemented_is_reported_not_raised(fake):
    fake["kind"] = "unsupported"
    res = check("fake", "tiny-mlp", "float64")
    assert res.status == "not_implemented" and "no such thing" in res.error and not res.passed


def test_compare_tensor_rows():
    ref = np.array([1.0, -2.0, 4.0])
    assert compare_tensor("t", "grad", ref + 1e-12, ref, 1e-9, ("float64",))["ok"]
    row = compare_tensor("t", "grad", ref + 1e-6, ref, 1e-9, ("float64",))
    assert not row["ok"] and row["max_rel"] == pytest.approx(2.5e-7) and "got" in row["detail"]
    assert not compare_tensor("t", "grad", np.array([np.nan, 0, 0]), ref, 1e-9, ("float64",))["ok"]


def test_cli(capsys):
    assert main(["--impl", "numpy", "--model", "tiny-mlp", "--dtype", "float64"]) == 0
    assert "numpy tiny-mlp float64: PASS" in capsys.readouterr().out
    assert main(["--impl", "nope"]) == 2
    assert main(["--impl", "numpy", "--model", "nope"]) == 2
