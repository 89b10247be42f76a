"""The conformance suite: every registered implementation that is available here, checked
the same way against the NumPy float64 reference (``bench.check.agreement.check``) and for the
contract in ``bench/core/model.py``. An unavailable backend is a skip with its reason,
unless ``NNBENCH_REQUIRE`` lists it (then it fails). Backend test files keep only what is
specific to their backend.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from bench.check import dropout
from bench.check.agreement import check, sample_batch
from bench.core.params import init_params
from bench.plan import backends
from bench.plan.presets import preset, random_spec

NAMES = backends.names()
PRESETS = ("tiny-mlp", "tiny-cnn", "mlp", "cnn", "dnn")
# Left out to keep the suite affordable (each with why): pure_python loops over every scalar
# in Python (minutes per full preset); torch-compile compiles every spec and mode afresh
# (~50 s per CNN case on 2 cores; tests/cpu/test_torch.py checks its agreement).
TOO_SLOW = {
    "pure_python": ({"mlp", "cnn", "dnn"}, "pure Python, minutes per full preset"),
    "torch-compile": ({"tiny-cnn", "mlp", "cnn", "dnn", "random"}, "compiles every spec afresh, ~50 s a case"),
}


def _skip_if_too_slow(name: str, what: str) -> None:
    slow, why = TOO_SLOW.get(name, ((), ""))
    if what in slow:
        pytest.skip(f"{name} on {what}: too slow for this suite ({why})")


RANDOM_SEEDS = (0, 1, 2)
DTYPES = ("float64", "float32")


def _backend(name: str):
    """The backend module, or a skip saying why it cannot run here (a failure if required)."""
    ok, reason = backends.available()[name]
    if not ok:
        required = os.environ.get("NNBENCH_REQUIRE", "").split(",")
        assert name not in required, f"{name} is required (NNBENCH_REQUIRE) but unavailable: {reason}"
        pytest.skip(f"{name} unavailable here: {reason}")
    return backends.get(name)


def _assert_agrees(name: str, spec, dtype: str) -> None:
    res = check(name, spec, dtype)
    if res.status == "not_implemented":
        assert res.error, f"{name}: NotImplementedError without a reason"
        pytest.skip(f"{name} does not support this spec: {res.error}")
    assert res.status == "ok", res.format()


# ---------------------------------------------------------------------------- agreement
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("model_name", PRESETS)
@pytest.mark.parametrize("name", NAMES)
def test_agrees_on_presets(name, model_name, dtype):
    _backend(name)
    _skip_if_too_slow(name, model_name)
    _assert_agrees(name, model_name, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", RANDOM_SEEDS)
@pytest.mark.parametrize("name", NAMES)
def test_agrees_on_random_specs(name, seed, dtype):
    _backend(name)
    _skip_if_too_slow(name, "random")
    _assert_agrees(name, random_spec(seed), dtype)


class _Perturbed:
    """A built model whose first weight's gradient (and the same parameter after the steps)
    is off by 1% of the tensor's scale in one element: the check must catch it."""

    def __init__(self, model, name: str):
        self._model, self._name = model, name

    def __getattr__(self, attr):
        return getattr(self._model, attr)

    def _bump(self, tensors: dict) -> dict:
        a = np.array(tensors[self._name])
        a.flat[0] += 1e-2 * max(float(np.abs(a).max()), 1e-3)
        return {**tensors, self._name: a}

    def loss_and_grads(self, x, y):
        loss, grads = self._model.loss_and_grads(x, y)
        return loss, self._bump(grads)

    def params(self):
        return self._bump(self._model.params())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_negative_control(name, dtype, monkeypatch):
    """The same check, on this backend's own results with one gradient and one parameter
    perturbed, fails, and names both."""
    backend = _backend(name)
    spec = preset("tiny-mlp")
    first = sorted(spec.param_shapes())[0]
    build, built = backend.build, []

    def perturbed_build(*args, **kwargs):  # check() builds the NumPy reference through reference(), not build()
        built.append(model := build(*args, **kwargs))
        return _Perturbed(model, first)

    monkeypatch.setattr(backend, "build", perturbed_build)
    res = check(name, spec, dtype)
    assert res.status == "disagrees", res.format()
    failed = {(r["phase"], r["tensor"]) for r in res.failures()}
    assert {("grad", first), ("params", first)} <= failed, res.format(verbose=True)
    assert len(built) == 1  # the model under test; the reference was never perturbed


# ---------------------------------------------------------------------------- contract
@pytest.mark.parametrize("name", NAMES)
def test_available_never_raises_and_gives_a_reason(name):
    ok, reason = backends.available()[name]  # the registry's answer never raises, whatever the plugin does
    assert isinstance(ok, bool) and isinstance(reason, str) and reason
    if reason.startswith("availability check failed"):  # its import or own check raised: a skip with why
        _backend(name)
    ok, reason = backends.get(name).available()
    assert isinstance(ok, bool) and isinstance(reason, str) and reason


@pytest.mark.parametrize("name", NAMES)
def test_module_surface(name):
    backend = _backend(name)
    assert isinstance(backend.REQUIRES, tuple) and isinstance(backend.settings(), dict)


@pytest.mark.parametrize("name", NAMES)
def test_not_implemented_carries_a_reason(name):
    backend = _backend(name)
    spec = preset("tiny-mlp")
    with pytest.raises(NotImplementedError, match=r"\S"):
        backend.build(spec, init_params(spec, 0), "float16")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_params_never_alias_and_callers_arrays_are_untouched(name, dtype):
    """``params()`` returns copies (editing one changes nothing, a step does not change an
    earlier one); the caller's params and batches are never modified."""
    backend = _backend(name)
    spec = preset("tiny-cnn")
    given = init_params(spec, 0, bias="uniform")
    given_copy = {k: v.copy() for k, v in given.items()}
    x, y = sample_batch(spec, 4, 0)
    x0, y0 = x.copy(), y.copy()
    try:
        model = backend.build(spec, given, dtype)
    except NotImplementedError as e:  # a backend of dense layers only (a plugin): a skip with why
        pytest.skip(f"{name} does not support this spec: {e}")

    first = model.params()
    first_copy = {k: v.copy() for k, v in first.items()}
    for v in first.values():
        v += 1.0  # an edit of the returned copy must not reach the model
    assert all(np.array_equal(model.params()[k], first_copy[k]) for k in first)

    model.sgd_step(x, y, 0.1)
    model.optimizer_step(x, y)
    model.train_step(model.to_device(x), model.to_device(y))
    model.sync()
    after = model.params()
    assert any(not np.array_equal(after[k], first_copy[k]) for k in after), "steps changed nothing"
    for k in given:
        assert np.array_equal(given[k], given_copy[k]), f"{name} modified the caller's {k}"
    assert np.array_equal(x, x0) and np.array_equal(y, y0), f"{name} modified the caller's batch"


# ---------------------------------------------------------------------------- dropout
DROPOUT_RATES = (0.4, 0.2)  # the course's mlp and dnn


@pytest.mark.parametrize("rate", DROPOUT_RATES)
@pytest.mark.parametrize("name", NAMES)
def test_dropout_keeps_1_minus_rate_and_scales_by_its_inverse(name, rate):
    """Training-mode dropout read off the backend's own ``train_step`` (``bench.check.dropout``):
    keep probability, inverted scale, a fresh mask per seed."""
    module = _backend(name)
    if "gpu" in getattr(module, "REQUIRES", ()):
        pytest.skip(f"{name}: a GPU backend (tests/gpu)")
    builds = 4 if name == "torch-compile" else 8  # each build compiles afresh
    res = dropout.check(module, rate, "float64", builds=builds, units=300 if name == "pure_python" else 2000)
    assert res.ok, f"{name}: {res.detail()}"


class _Wrapped:
    """A backend made wrong on purpose from NumPy's: the negative controls of the dropout check."""

    def __init__(self, fault: str) -> None:
        self.fault = fault

    def build(self, spec, params, dtype="float32", seed=0):
        inner = backends.get("numpy")
        if self.fault == "rate":  # drops 0.5 where the spec says less
            layers = [dict(lay.to_dict(), rate=0.5) if lay.type == "dropout" else lay.to_dict() for lay in spec.layers]
            spec = spec.replace(layers=layers)
        if self.fault == "seed":  # every build draws the same masks
            seed = 0
        model = inner.build(spec, params, dtype, seed=seed)
        if self.fault == "scale":  # no inverted scaling: the kept units' update is (1 - rate) too small
            keep = 1 - next(lay.rate for lay in spec.layers if lay.type == "dropout")
            return _Unscaled(model, keep)
        return model


class _Unscaled:
    def __init__(self, model, keep: float) -> None:
        self.m, self.keep, self.before = model, keep, None

    def __getattr__(self, name):
        return getattr(self.m, name)

    def train_step(self, x, y):
        self.before = self.m.params()
        self.m.train_step(x, y)

    def params(self):
        now = self.m.params()
        if self.before is None:
            return now
        return {k: self.before[k] + (now[k] - self.before[k]) * self.keep for k in now}


@pytest.mark.parametrize("fault", ["rate", "seed", "scale"])
def test_dropout_check_fails_a_wrong_backend(fault):
    res = dropout.check(_Wrapped(fault), 0.4, "float64")
    assert not res.ok, f"a backend with the wrong {fault} passed: {res.detail()}"
    assert dropout.check(backends.get("numpy"), 0.4, "float64").ok  # the positive control, same draws
