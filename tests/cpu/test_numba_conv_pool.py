"""numba: the fused conv + relu + 2x2 pool block against the general (unfused) path of the
same backend, on odd geometries (valid padding, 5x5 kernels, odd sizes with floored pool
rows, 2 input channels); buffer reuse across batch sizes; a negative control."""

import numba  # noqa: F401 - a required dependency of the test env
import numpy as np
import pytest

import implementations
from bench.agreement import rel_error
from bench.params import init_params
from bench.spec import ModelSpec
from implementations.base import one_hot
from implementations.numba import conv_pool

NB = implementations.get("numba")


def rel_err(a, b) -> float:
    return rel_error(a, b)[1]


def _spec(channels: int, size: int, kernel: int, padding: str) -> ModelSpec:
    return ModelSpec.from_dict(
        {
            "name": f"block-{channels}-{size}-{kernel}-{padding}",
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


GEOMETRIES = [(1, 12, 3, "same"), (2, 11, 3, "same"), (1, 13, 5, "valid"), (2, 9, 5, "same"), (1, 10, 3, "valid")]


def _grads(spec, dtype, batch=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *spec.input_shape))
    y = one_hot(rng.integers(0, spec.num_classes, batch), spec.num_classes)
    m = NB.build(spec, init_params(spec, 0, bias="uniform"), dtype)
    return m.loss_and_grads(x, y)


def _unfused(monkeypatch):
    monkeypatch.setattr(conv_pool, "fusable", lambda layers, i: False)


@pytest.mark.parametrize("geom", GEOMETRIES, ids=lambda g: "-".join(map(str, g)))
def test_fused_block_matches_the_general_path(geom, monkeypatch):
    spec = _spec(*geom)
    assert conv_pool.fusable(spec.layers, 0) and conv_pool.fusable(spec.layers, 3)
    loss, grads = _grads(spec, "float64")
    _unfused(monkeypatch)
    loss_ref, grads_ref = _grads(spec, "float64")
    assert abs(loss - loss_ref) <= 1e-12 * abs(loss_ref)
    assert grads.keys() == grads_ref.keys()
    for k in grads:
        assert rel_err(grads[k], grads_ref[k]) <= 1e-12, k


def test_buffers_are_reused_across_batch_sizes_and_grads_do_not_alias_them():
    spec = _spec(2, 11, 3, "same")
    m = NB.build(spec, init_params(spec, 0, bias="uniform"), "float64")
    rng = np.random.default_rng(1)
    batches = [(rng.standard_normal((n, *spec.input_shape)), one_hot(rng.integers(0, 3, n), 3)) for n in (3, 5, 3)]
    first = m.loss_and_grads(*batches[0])
    kept = {k: v.copy() for k, v in first[1].items()}
    m.loss_and_grads(*batches[1])  # another shape: buffers are re-made
    again = m.loss_and_grads(*batches[0])
    for k in kept:
        assert np.array_equal(first[1][k], kept[k]), k  # not overwritten by later steps
        assert np.array_equal(again[1][k], kept[k]), k


def test_negative_control_wrong_routing_in_the_fused_backward_fails(monkeypatch):
    """Routing every window's gradient to its last cell must break the comparison."""
    spec = _spec(1, 12, 3, "same")
    _, good = _grads(spec, "float64")
    orig = conv_pool.pool_relu_grad_bias
    monkeypatch.setattr(
        conv_pool, "pool_relu_grad_bias", lambda dy, arg, out, dz, db: orig(dy, np.full_like(arg, 3), out, dz, db)
    )
    _, bad = _grads(spec, "float64")
    assert max(rel_err(bad[k], good[k]) for k in good) > 1e-3
