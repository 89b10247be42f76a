"""The implementation registry and the contract every available backend keeps."""

import numpy as np
import pytest

import implementations
from bench.agreement import check, sample_batch
from bench.params import init_params
from bench.spec import preset

EXPECTED = {"pure_python", "numpy", "numba", "cupy", "keras", "torch"}


def test_names_and_unknown():
    assert EXPECTED <= set(implementations.names())
    with pytest.raises(KeyError, match="valid names: pure_python, numpy"):
        implementations.get("tensorflow-js")


def test_available_never_crashes_and_gives_reasons(monkeypatch):
    monkeypatch.setitem(implementations._REGISTRY, "broken", "no_such_module_xyz")
    avail = implementations.available()
    assert set(avail) == set(implementations.names())
    ok, reason = avail["broken"]
    assert not ok and "No module named 'no_such_module_xyz'" in reason
    for name, (ok, reason) in avail.items():
        assert isinstance(ok, bool) and reason, name


def _available():
    return [n for n, (ok, _) in implementations.available().items() if ok]


@pytest.mark.parametrize("name", sorted(EXPECTED | {"torch-compile", "torch-cuda"}))
def test_every_available_backend_keeps_the_contract(name):
    ok, reason = implementations.available()[name]
    if not ok:
        pytest.skip(f"{name} unavailable here: {reason}")
    backend = implementations.get(name)
    assert isinstance(backend.REQUIRES, tuple) and isinstance(backend.settings(), dict)
    spec = preset("tiny-cnn")
    model = backend.build(spec, init_params(spec, 0), "float32")
    x, y = sample_batch(spec, 4, 0)
    p = model.forward(x)
    assert isinstance(p, np.ndarray) and p.shape == (4, 10) and np.allclose(p.sum(1), 1, atol=1e-5)
    before = model.params()
    model.train_step(model.to_device(x), model.to_device(y))
    model.sync()
    after = model.params()
    assert set(after) == set(before) and any(not np.array_equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("model_name", ["tiny-mlp", "tiny-cnn"])
def test_every_available_backend_agrees_on_tiny_specs(model_name):
    """The cross-implementation gate on the cheap specs (backends' own tests go further).
    Every available backend implements the tiny specs in both dtypes: ``not_implemented``
    here is a failure, not a quiet pass."""
    failures = []
    for name in _available():
        for dtype in ("float64", "float32"):
            res = check(name, model_name, dtype)
            if res.status != "ok":
                failures.append(res.format())
    assert not failures, "\n".join(failures)


def test_required_backends_are_available():
    """CI lists the backends its environment installs (NNBENCH_REQUIRE in tox.ini): one
    that fails to import there is an error, not a quiet skip."""
    import os

    required = [n for n in os.environ.get("NNBENCH_REQUIRE", "").split(",") if n]
    if not required:
        pytest.skip("NNBENCH_REQUIRE not set: no backend is required in this environment")
    avail = implementations.available()
    missing = {n: avail[n][1] for n in required if not avail[n][0]}
    assert not missing, f"required backends unavailable: {missing}"
