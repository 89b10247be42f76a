"""The spec's optimizer (SGD or Keras' Adam), its initialiser and seeded dropout, in every
CPU backend: Adam's float64 trajectory agrees with the NumPy reference, epsilon placed the
PyTorch way fails it, and the two built-in optimizers are checked against the formula."""

import math

import fake_backends
import numpy as np
import pytest

from bench.check.agreement import TOLERANCES, check, sample_batch
from bench.core.params import init_params
from bench.core.spec import ModelSpec, SpecError
from bench.plan import backends
from bench.plan.presets import preset
from implementations.optim import Adam, adam_step_size


def adam_variant(name: str) -> ModelSpec:
    spec = preset(name)
    return spec.replace(name=f"{name}-adam", train={**spec.train.to_dict(), "optimizer": "adam"})


# ---------------------------------------------------------------------------- spec
def test_optimizer_and_init_in_the_spec():
    dnn = preset("dnn")
    assert (dnn.train.optimizer, dnn.train.beta_1, dnn.train.beta_2, dnn.train.epsilon) == ("adam", 0.9, 0.999, 1e-7)
    assert dnn.init == "glorot_uniform" and preset("mlp-relu").init == "he_uniform"
    assert preset("mlp").train.optimizer == "sgd" and "optimizer" not in preset("mlp").train.to_dict()
    assert ModelSpec.from_dict(dnn.to_dict()) == dnn
    d = preset("tiny-mlp").to_dict()
    d.pop("init")
    assert ModelSpec.from_dict(d).init == "glorot_uniform"  # Keras' default when absent
    for bad, match in (
        ({"optimizer": "rmsprop"}, "optimizer must be one of"),
        ({"beta_1": 0.5}, "apply to adam only"),
        ({"optimizer": "adam", "epsilon": 0}, "epsilon must be"),
    ):
        with pytest.raises(SpecError, match=match):
            ModelSpec.from_dict({**d, "train": {**d["train"], **bad}})
    with pytest.raises(SpecError, match="init must be one of"):
        ModelSpec.from_dict({**d, "init": "lecun_normal"})


def test_adam_step_matches_the_keras_formula():
    tr = preset("dnn").train
    w, g = {"a": np.array([0.5, -0.25, 1.0])}, np.array([1e-3, -2e-2, 0.0])
    opt = Adam(tr)
    opt.update(w, {"a": g})
    alpha = 1e-3 * math.sqrt(1 - 0.999) / (1 - 0.9)
    assert adam_step_size(tr, 1) == pytest.approx(alpha, rel=1e-15)
    want = np.array([0.5, -0.25, 1.0]) - alpha * (0.1 * g) / (np.sqrt(0.001 * g * g) + 1e-7)
    np.testing.assert_allclose(w["a"], want, rtol=1e-15)


# ---------------------------------------------------------------------------- agreement
CASES = [
    (impl, name)
    for impl in ("numba", "pure_python", "torch", "keras")
    for name in ("tiny-mlp-adam", "tiny-cnn-adam", "dnn")
    if not (impl == "pure_python" and name == "tiny-cnn-adam")
] + [("pure_python", "tiny-cnn-adam"), ("torch-compile", "tiny-mlp-adam")]


@pytest.mark.parametrize("impl,name", CASES)
def test_adam_trajectory_agrees_in_float64(impl, name):
    spec = preset(name) if name == "dnn" else adam_variant(name.removesuffix("-adam"))
    res = check(impl, spec, "float64", batch=4, steps=3)
    assert res.passed, res.format(verbose=True)
    steps = [r for r in res.rows if r["tensor"].startswith("loss@step")]
    assert len(steps) == 3 and max(r["max_rel"] for r in res.rows if r["phase"] == "params") <= 1e-9


@pytest.mark.parametrize("impl", ["numba", "torch", "keras"])
def test_adam_trajectory_agrees_in_float32(impl):
    res = check(impl, preset("dnn"), "float32", batch=8, steps=3)
    assert res.passed, res.format()
    assert res.worst()["params"] <= TOLERANCES["float32"].adam_params


def test_epsilon_placed_the_pytorch_way_fails_float64(monkeypatch):
    """Negative control: the same Adam with torch.optim.Adam's epsilon placement."""
    monkeypatch.setitem(backends._extra, "fake", "fake_backends")
    monkeypatch.setitem(fake_backends.BREAK, "kind", "torch_adam_epsilon")
    for name in ("tiny-mlp", "dnn"):
        spec = preset(name) if name == "dnn" else adam_variant(name)
        res = check("fake", spec, "float64", batch=4, steps=3)
        assert not res.passed
        bad = {(r["phase"], r["tensor"]) for r in res.failures()}
        assert "params" in {p for p, _ in bad} and ("loss", "loss@step0") not in bad  # the first step's loss agrees
        assert not {p for p, _ in bad} & {"forward", "grad", "activation"}
        assert max(r["max_rel"] for r in res.failures()) > 1e-6


def test_torch_optim_adam_is_not_the_spec_formula():
    """Why the torch backend writes its own update: torch.optim.Adam's float64 step is off
    Keras' formula by far more than rounding."""
    import torch

    tr = preset("dnn").train
    g = torch.tensor([1e-3, -2e-4, 5e-6], dtype=torch.float64)
    p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([p], lr=tr.lr, betas=(tr.beta_1, tr.beta_2), eps=tr.epsilon)
    p.grad = g.clone()
    opt.step()
    w = {"p": np.zeros(3)}
    Adam(tr).update(w, {"p": g.numpy()})
    rel = np.abs(p.detach().numpy() - w["p"]).max() / np.abs(w["p"]).max()
    assert rel > 1e-6


def test_keras_adam_with_python_float_betas_deviates_in_float64():
    """The finding behind the keras backend's float64 betas: Keras casts a Python-float beta
    through float32, so the built-in's first step is 6.7e-6 off; float64 scalars are exact."""
    from implementations.keras.model import floatx
    from implementations.keras.setup import keras_tf

    tf, keras = keras_tf()
    tr = preset("dnn").train
    g = np.array([1e-3, -2e-4, 5e-6])
    want = {"w": np.zeros(3)}
    Adam(tr).update(want, {"w": g})
    errs = []
    for beta in (float, np.float64):
        with floatx("float64"):
            var = keras.Variable(np.zeros(3), dtype="float64")
            opt = keras.optimizers.Adam(learning_rate=tr.lr, beta_1=beta(0.9), beta_2=beta(0.999), epsilon=1e-7)
            opt.apply([tf.constant(g)], [var])
        errs.append(np.abs(var.numpy() - want["w"]).max() / np.abs(want["w"]).max())
    assert errs[0] == pytest.approx(6.67e-6, rel=0.01) and errs[1] <= 1e-15


# ---------------------------------------------------------------------------- seeded dropout
@pytest.mark.parametrize("impl", ["numpy", "numba", "pure_python", "torch", "keras"])
def test_dropout_masks_follow_the_seed(impl):
    """Same seed: the same training step; another seed: other masks, another step."""
    spec = adam_variant("tiny-mlp")
    params = init_params(spec, 0)
    x, y = sample_batch(spec, 8, 0)

    def trained(seed):
        model = backends.get(impl).build(spec, params, "float64", seed=seed)
        model.train_step(model.to_device(x), model.to_device(y))
        return model.params()["1.W"]

    a, b, c = trained(0), trained(0), trained(1)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("impl", ["numpy", "numba", "pure_python", "torch", "keras"])
def test_training_leaves_the_callers_params_and_returned_params_alone(impl):
    """float64 params go in without a copy by dtype conversion: the model must still copy
    them (numba once trained the caller's arrays in place), and ``params()`` must not be a
    view that later steps change."""
    spec = adam_variant("tiny-mlp")
    params = init_params(spec, 0)
    before = {k: v.copy() for k, v in params.items()}
    x, y = sample_batch(spec, 8, 0)
    model = backends.get(impl).build(spec, params, "float64", seed=0)
    model.train_step(model.to_device(x), model.to_device(y))
    got = model.params()
    snapshot = {k: v.copy() for k, v in got.items()}
    model.train_step(model.to_device(x), model.to_device(y))
    assert all(np.array_equal(params[k], before[k]) for k in params)
    assert all(np.array_equal(got[k], snapshot[k]) for k in got)
