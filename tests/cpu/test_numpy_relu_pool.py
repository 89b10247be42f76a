"""numpy: relu + 2x2 pool run as pool-then-relu (``cnn.relu_pool_forward``) against the
general path (relu, then pool), on odd geometries and inputs with all-negative windows;
a negative control."""

import numpy as np
import pytest

from bench.check.agreement import rel_error
from bench.core.model import one_hot
from bench.core.params import init_params
from bench.core.spec import ModelSpec
from bench.plan import backends
from implementations.numpy import cnn
from implementations.numpy.model import XpModel

NP = backends.get("numpy")


def _spec(channels: int, size: int, kernel: int, padding: str) -> ModelSpec:
    return ModelSpec.from_dict(
        {
            "name": f"relu-pool-{channels}-{size}-{kernel}-{padding}",
            "input_shape": [channels, size, size],
            "loss": "mse",
            "layers": [
                {"type": "conv2d", "filters": 4, "kernel": kernel, "padding": padding},
                {"type": "relu"},
                {"type": "maxpool2d"},
                {"type": "conv2d", "filters": 5, "kernel": 3, "padding": "same"},
                {"type": "relu"},
                {"type": "maxpool2d"},
                {"type": "flatten"},
                {"type": "dense", "units": 3},
                {"type": "softmax"},
            ],
            "train": {"lr": 0.1, "batch_size": 4, "epochs": 1},
        }
    )


GEOMETRIES = [(1, 12, 3, "same"), (2, 11, 3, "same"), (1, 13, 5, "valid"), (2, 9, 5, "same")]


def _run(spec, batch=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *spec.input_shape))  # many all-negative windows after relu
    y = one_hot(rng.integers(0, spec.num_classes, batch), spec.num_classes)
    m = NP.build(spec, init_params(spec, 0, bias="uniform"), "float64")
    return m.activations(x), *m.loss_and_grads(x, y)


def _assert_same(a, b, tol):
    acts, loss, grads = a
    acts_ref, loss_ref, grads_ref = b
    for got, want in zip(acts, acts_ref, strict=True):
        assert rel_error(got, want)[1] <= tol
    assert abs(loss - loss_ref) <= tol * abs(loss_ref)
    for k in grads_ref:
        assert rel_error(grads[k], grads_ref[k])[1] <= tol, k


@pytest.mark.parametrize("geom", GEOMETRIES, ids=lambda g: "-".join(map(str, g)))
def test_relu_pool_matches_the_general_path(geom, monkeypatch):
    spec = _spec(*geom)
    fused = _run(spec)
    monkeypatch.setattr(XpModel, "_pool_follows", lambda self, i: False)
    _assert_same(fused, _run(spec), 0.0)  # the same floating-point operations: bit-equal


def test_the_fused_path_is_taken(monkeypatch):
    calls = []
    orig = cnn.relu_pool_forward
    monkeypatch.setattr(cnn, "relu_pool_forward", lambda x: calls.append(1) or orig(x))
    _run(_spec(1, 12, 3, "same"))
    assert calls


def test_negative_control_a_missing_relu_mask_fails(monkeypatch):
    spec = _spec(1, 12, 3, "same")
    good = _run(spec)
    monkeypatch.setattr(cnn, "relu_pool_backward", lambda c, dy: cnn.maxpool_backward(c.arg, c.x_shape, dy))
    with pytest.raises(AssertionError):
        _assert_same(_run(spec), good, 1e-6)
