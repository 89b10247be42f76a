"""pure_python: agreement with the NumPy float64 reference (tiny specs only: it is slow),
standard-library-only compute path, dropout, metadata, and negative controls."""

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest
from odd_specs import ODD_SPECS  # valid padding, floor pools, k=1/5, unfused activations

from bench.check.agreement import TOLERANCES, check
from bench.core.model import one_hot
from bench.core.params import init_params
from bench.core.spec import ModelSpec
from bench.plan import backends
from bench.plan.presets import preset, random_spec

PP = backends.get("pure_python")


def _assert_agrees(spec, dtype="float64", **kw):
    res = check("pure_python", spec, dtype, **kw)
    assert res.passed, res.format(verbose=True)
    tol = TOLERANCES["float64"]
    worst = res.worst()  # float64 compute: float64 tolerances hold whatever dtype was asked
    assert worst["grad"] <= tol.grad and worst["forward"] <= tol.forward and worst["params"] <= tol.params
    return res


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ["tiny-mlp", "tiny-cnn"])
def test_tiny_presets_agree_within_1e9(name, dtype):
    res = _assert_agrees(name, dtype)
    assert {r["phase"] for r in res.rows} == {"activation", "forward", "loss", "grad", "params"}


@pytest.mark.parametrize("seed", range(6))
def test_random_specs_agree(seed):
    _assert_agrees(random_spec(seed), seed=seed, batch=5)


@pytest.mark.parametrize("d", ODD_SPECS, ids=lambda d: d["name"])
def test_odd_shapes_agree(d):
    _assert_agrees(ModelSpec.from_dict(d), batch=3)


def test_every_layer_type_and_loss_is_covered():
    specs = [preset("tiny-mlp"), preset("tiny-cnn")] + [ModelSpec.from_dict(d) for d in ODD_SPECS]
    kinds = {layer.type for s in specs for layer in s.layers}
    assert kinds == {"conv2d", "maxpool2d", "flatten", "dense", "sigmoid", "relu", "tanh", "softmax", "dropout"}
    assert {s.loss for s in specs} == {"mse", "cross_entropy"}
    assert {layer.padding for s in specs for layer in s.layers if layer.type == "conv2d"} == {"same", "valid"}


def test_negative_control_a_perturbed_weight_fails():
    spec = preset("tiny-cnn")
    params = init_params(spec, 0, bias="uniform")
    bad = {k: v.copy() for k, v in params.items()}
    bad["3.W"][1, 2, 0, 1] += 1e-6  # one weight of the second conv
    model = PP.build(spec, bad, "float64")
    ref = backends.get("numpy").build(spec, params, "float64")
    x = np.random.default_rng(0).random((4, *spec.input_shape))
    err = np.abs(model.forward(x) - ref.forward(x)).max() / np.abs(ref.forward(x)).max()
    assert err > TOLERANCES["float64"].forward
    res = check("pure_python", spec, "float64", params=params)  # and the unperturbed one passes
    assert res.passed


def test_negative_control_internal_transposed_copy_out_of_sync_fails():
    """If the update forgot the transposed copy, gradients after a step would go wrong."""
    spec = preset("tiny-mlp")
    params = init_params(spec, 0, bias="uniform")
    model, ref = PP.build(spec, params, "float64"), backends.get("numpy").build(spec, params, "float64")
    rng = np.random.default_rng(0)
    x, y = rng.random((4, *spec.input_shape)), one_hot(rng.integers(0, 10, 4))
    model.sgd_step(x, y, 0.1)
    ref.sgd_step(x, y, 0.1)
    model.wt["4.W"] = [[v + 1e-3 for v in row] for row in model.wt["4.W"]]  # stale copy
    _, g = model.loss_and_grads(x, y)
    _, g_ref = ref.loss_and_grads(x, y)
    assert np.abs(g["1.W"] - g_ref["1.W"]).max() / np.abs(g_ref["1.W"]).max() > TOLERANCES["float64"].grad


def test_compute_path_uses_no_numpy():
    """ops.py imports only the standard library; the model's compute methods never touch np."""
    import implementations.pure_python.model as model_mod
    import implementations.pure_python.ops as ops

    tree = ast.parse(Path(ops.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"__future__", "time", "itertools", "math", "operator", "random"}, imported
    cls = model_mod.PurePythonModel
    for meth in ("_layer_forward", "_forward", "_layer_backward", "_step", "_update", "train_step"):
        src = inspect.getsource(getattr(cls, meth))
        assert "np." not in src and "numpy" not in src, meth


def test_train_step_uses_dropout_and_is_reproducible():
    spec = preset("tiny-mlp")
    params = init_params(spec, 0)
    rng = np.random.default_rng(0)
    x, y = rng.random((8, *spec.input_shape)), one_hot(rng.integers(0, 10, 8))
    a, b, c = (PP.build(spec, params, "float32") for _ in range(3))
    for m in (a, b):
        m.train_step(m.to_device(x), m.to_device(y))
    c.sgd_step(x, y, spec.train.lr)  # same step without dropout
    pa, pb, pc = a.params(), b.params(), c.params()
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)  # same seed, same masks
    assert not np.allclose(pa["1.W"], pc["1.W"])  # dropout changed the step
    assert all(v.dtype == np.float64 for v in pa.values())
    mask = PP.build(spec, params, "float64")
    m = __import__("implementations.pure_python.ops", fromlist=["x"]).dropout_mask(mask.rng.random, 200, 100, 0.4)
    flat = [v for r in m for v in r]
    assert abs(sum(v > 0 for v in flat) / len(flat) - 0.6) < 0.02 and max(flat) == pytest.approx(1 / 0.6)


def test_metadata_says_float64():
    ok, reason = PP.available()
    assert ok and "float64" in reason
    assert PP.settings()["compute_dtype"] == "float64"
    assert "float64" in PP.__doc__
    assert PP.build(preset("tiny-mlp"), init_params(preset("tiny-mlp"), 0), "float32").compute_dtype == "float64"


def test_dot_rate_baseline_is_a_rate():
    rate = PP.dot_rate_baseline(seconds=0.05, length=64, rows=16)
    assert 1e5 < rate < 1e10
