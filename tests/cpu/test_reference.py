"""The NumPy float64 reference against independent oracles: PyTorch float64 autograd
(forward, loss, every gradient, a 3-step trajectory of the spec's optimizer, SGD or Adam)
and central finite differences."""

import numpy as np
import pytest
from oracle_torch import oracle

from bench.check.agreement import TOLERANCES, compare_tensor, sample_batch
from bench.core.params import init_params
from bench.plan import backends
from bench.plan.presets import preset, random_spec

TOL = TOLERANCES["float64"]


def _reference_vs_oracle(spec, batch=6, seed=0):
    params = init_params(spec, seed, bias="uniform")
    x, y = sample_batch(spec, batch, seed)
    steps = [sample_batch(spec, batch, seed + 1 + k) for k in range(3)]
    want = oracle(spec, params, x, y, steps)
    model = backends.get("numpy").build(spec, params, "float64")
    rows = [compare_tensor("probs", "forward", model.forward(x), want["probs"], TOL.forward, ("float64",))]
    loss, grads = model.loss_and_grads(x, y)
    rows.append(compare_tensor("loss", "loss", loss, want["loss"], TOL.loss, ("float64",)))
    assert set(grads) == set(want["grads"])
    rows += [compare_tensor(k, "grad", grads[k], want["grads"][k], TOL.grad, ("float64",)) for k in grads]
    for k, (xb, yb) in enumerate(steps):
        got = model.optimizer_step(xb, yb)
        rows.append(compare_tensor(f"loss@{k}", "loss", got, want["step_losses"][k], TOL.loss, ("float64",)))
    p = model.params()
    rows += [compare_tensor(k, "params", p[k], want["params"][k], TOL.params, ("float64",)) for k in p]
    return rows


def _assert_rows(rows):
    bad = [r for r in rows if not r["ok"]]
    assert not bad, "\n".join(f"{r['tensor']}: max_rel={r['max_rel']:.3e} {r.get('detail', '')}" for r in bad)


def adam_variant(spec):
    """``spec`` trained with Adam (Keras' defaults) instead of its own optimizer."""
    return spec.replace(name=f"{spec.name}-adam", train={**spec.train.to_dict(), "optimizer": "adam"})


@pytest.mark.parametrize("name", ["tiny-mlp", "tiny-cnn", "mlp-relu", "mlp", "cnn", "dnn"])
def test_numpy_matches_torch_on_presets(name):
    _assert_rows(_reference_vs_oracle(preset(name), batch=4 if name == "cnn" else 6))


@pytest.mark.parametrize("seed", range(12))
def test_numpy_matches_torch_on_random_specs(seed):
    _assert_rows(_reference_vs_oracle(random_spec(seed), batch=5, seed=seed))


@pytest.mark.parametrize("seed", range(4))
def test_numpy_adam_matches_torch_on_random_specs(seed):
    _assert_rows(_reference_vs_oracle(adam_variant(random_spec(seed)), batch=5, seed=seed))


def test_oracle_comparison_can_fail():
    """Negative control: one perturbed weight makes the oracle comparison fail, in the
    layer's gradient and in the forward output."""
    spec = preset("tiny-cnn")
    params = init_params(spec, 0, bias="uniform")
    x, y = sample_batch(spec, 6, 0)
    want = oracle(spec, params, x, y)
    bad = {k: v.copy() for k, v in params.items()}
    bad["3.W"][1, 0, 1, 1] += 1e-3
    model = backends.get("numpy").build(spec, bad, "float64")
    assert not compare_tensor("probs", "forward", model.forward(x), want["probs"], TOL.forward, ("float64",))["ok"]
    _, grads = model.loss_and_grads(x, y)
    assert not compare_tensor("3.W", "grad", grads["3.W"], want["grads"]["3.W"], TOL.grad, ("float64",))["ok"]


@pytest.mark.parametrize("name", ["tiny-mlp", "tiny-cnn", "random-3", "random-4"])
def test_finite_differences(name):
    """Central differences (h = 1e-6) on 6 random entries of every parameter."""
    spec = random_spec(int(name.split("-")[1])) if name.startswith("random") else preset(name)
    params = init_params(spec, 1, bias="uniform")
    x, y = sample_batch(spec, 4, 1)
    build = backends.get("numpy").build
    _, grads = build(spec, params, "float64").loss_and_grads(x, y)
    rng = np.random.default_rng(0)
    h = 1e-6
    for name_, g in grads.items():
        for _ in range(6):
            idx = tuple(int(rng.integers(0, d)) for d in g.shape)
            p = {k: v.copy() for k, v in params.items()}
            p[name_][idx] += h
            up, _ = build(spec, p, "float64").loss_and_grads(x, y)
            p[name_][idx] -= 2 * h
            down, _ = build(spec, p, "float64").loss_and_grads(x, y)
            fd = (up - down) / (2 * h)
            scale = max(np.abs(g).max(), 1e-8)
            assert abs(fd - g[idx]) <= 1e-6 * scale + 1e-9, (name_, idx, fd, g[idx])


def test_finite_differences_catch_a_wrong_gradient():
    """Negative control for the check above: a gradient scaled by 1.01 is caught."""
    spec = preset("tiny-mlp")
    params = init_params(spec, 1, bias="uniform")
    x, y = sample_batch(spec, 4, 1)
    build = backends.get("numpy").build
    _, grads = build(spec, params, "float64").loss_and_grads(x, y)
    idx = np.unravel_index(np.abs(grads["1.W"]).argmax(), grads["1.W"].shape)
    h = 1e-6
    p = {k: v.copy() for k, v in params.items()}
    p["1.W"][idx] += h
    up, _ = build(spec, p, "float64").loss_and_grads(x, y)
    p["1.W"][idx] -= 2 * h
    down, _ = build(spec, p, "float64").loss_and_grads(x, y)
    fd = (up - down) / (2 * h)
    assert abs(fd - 1.01 * grads["1.W"][idx]) > 1e-6 * np.abs(grads["1.W"]).max()


def test_numpy_dtype_and_params_untouched():
    spec = preset("tiny-cnn")
    params = init_params(spec, 0)
    before = {k: v.copy() for k, v in params.items()}
    m = backends.get("numpy").build(spec, params, "float32")
    x, y = sample_batch(spec, 4, 0)
    assert m.forward(x).dtype == np.float32
    m.sgd_step(x, y, 0.1)
    m.train_step(m.to_device(x), m.to_device(y))
    assert all(np.array_equal(before[k], params[k]) for k in params), "build must copy the caller's params"
    with pytest.raises(NotImplementedError, match="float16"):
        backends.get("numpy").build(spec, params, "float16")


def test_maxpool_routes_to_first_argmax_only():
    """Ties (common after relu) send the gradient to one input, the first in the window."""
    from implementations.numpy import cnn

    x = np.array([[1.0, 1.0], [0.0, 1.0]]).reshape(1, 2, 2, 1)  # NHWC
    out, arg = cnn.maxpool_forward(x)
    dx = cnn.maxpool_backward(arg, x.shape, np.ones_like(out))
    assert out.item() == 1.0 and dx.reshape(-1).tolist() == [1.0, 0.0, 0.0, 0.0]
