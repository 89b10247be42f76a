"""Keras (TensorFlow backend) against the NumPy float64 reference. Keras/TensorFlow are
imported inside the tests (through the backend), never at collection."""

import numpy as np
import pytest

from bench.check.agreement import check, rel_error, sample_batch
from bench.core.params import init_params
from bench.core.spec import ModelSpec
from bench.core.threads import configured_threads
from bench.plan import backends
from bench.plan.presets import preset, random_spec


def _rel(a, b) -> float:
    return rel_error(a, b)[1]


# C = 3 channels of 4 x 4 before flatten, so NHWC and NCHW flatten orders differ.
FLAT_SPEC = {
    "name": "flatten-order",
    "input_shape": [2, 8, 8],
    "loss": "cross_entropy",
    "layers": [
        {"type": "conv2d", "filters": 3, "kernel": 3, "padding": "same"},
        {"type": "relu"},
        {"type": "maxpool2d", "size": 2},
        {"type": "flatten"},
        {"type": "dropout", "rate": 0.2},
        {"type": "dense", "units": 10},
        {"type": "softmax"},
    ],
    "train": {"lr": 0.05, "batch_size": 4, "epochs": 1},
}


def _ref(spec, params):
    return backends.get("numpy").build(spec, params, "float64")


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_reference_on_random_specs(seed):
    for dtype in ("float64", "float32"):
        res = check("keras", random_spec(seed), dtype, seed=seed, batch=5, steps=2)
        assert res.passed, res.format(verbose=True)


def test_flatten_permutation_is_needed_and_applied(monkeypatch):
    """3 x 4 x 4 before flatten: Keras flattens NHWC, the canonical dense rows are NCHW.
    Without the row permutation (negative control) the dense after flatten and everything
    after it disagree, and so do its gradients."""
    spec = ModelSpec.from_dict(FLAT_SPEC)
    assert spec.shapes()[2] == (3, 4, 4)
    assert check("keras", spec, "float64").passed
    import implementations.keras.model as km

    monkeypatch.setattr(km, "nchw_to_nhwc_rows", lambda spec, i: None)
    res = check("keras", spec, "float64")
    assert not res.passed
    assert res.first_divergent_layer == 5  # the dense after flatten (and dropout)
    assert "5.W" in {r["tensor"] for r in res.failures()}


def test_flatten_permutation_maps_rows_both_ways():
    from implementations.keras import build

    spec = ModelSpec.from_dict(FLAT_SPEC)
    params = init_params(spec, 0, bias="uniform")
    m = build(spec, params, "float64")
    kernel = m.model.layers[5].kernel.numpy()
    assert not np.array_equal(kernel, params["5.W"])  # stored permuted ...
    np.testing.assert_array_equal(np.sort(kernel, axis=None), np.sort(params["5.W"], axis=None))
    np.testing.assert_array_equal(m.params()["5.W"], params["5.W"])  # ... and given back canonical


def test_cross_entropy_is_not_clipped_at_extreme_logits():
    """Keras' CE on probabilities would clip p at 1e-7 (loss <= 16.1); the model's loss is
    computed from the logits, so it matches the reference where p underflows to 0."""
    spec = preset("tiny-cnn")
    params = init_params(spec, 0, bias="uniform")
    params["10.W"] = params["10.W"] * 300
    x, y = sample_batch(spec, 8, 1)
    from implementations.keras import build

    loss, grads = build(spec, params, "float64").loss_and_grads(x, y)
    ref_loss, ref_grads = _ref(spec, params).loss_and_grads(x, y)
    assert ref_loss > 100
    assert abs(loss - ref_loss) / ref_loss < 1e-12
    assert max(_rel(grads[k], ref_grads[k]) for k in ref_grads) < 1e-9


@pytest.mark.parametrize("kind", ["tf_function", "train_on_batch"])
def test_train_step_is_spec_lr_sgd_without_dropout(kind):
    from implementations.keras.model import KerasModel

    spec = preset("tiny-cnn")
    spec = spec.replace(layers=[d for d in spec.to_dict()["layers"] if d["type"] != "dropout"])
    params = init_params(spec, 0, bias="uniform")
    m, ref = KerasModel(spec, params, "float64", train_step=kind), _ref(spec, params)
    x, y = sample_batch(spec, 8, 3)
    for _ in range(2):
        m.train_step(m.to_device(x), m.to_device(y))
        ref.sgd_step(x, y, spec.train.lr)
    got, want = m.params(), ref.params()
    assert max(_rel(got[k], want[k]) for k in want) < 1e-12


def test_dropout_is_active_in_train_step_only():
    from implementations.keras import build

    spec = preset("tiny-mlp")
    params = init_params(spec, 0, bias="uniform")
    m, ref = build(spec, params, "float64"), _ref(spec, params)
    x, y = sample_batch(spec, 8, 3)
    np.testing.assert_array_equal(m.forward(x), m.forward(x))
    m.train_step(m.to_device(x), m.to_device(y))
    ref.sgd_step(x, y, spec.train.lr)  # the same step with dropout off
    assert _rel(m.params()["1.W"], ref.params()["1.W"]) > 1e-6


def test_settings_record_threads_and_numerics():
    from implementations.keras import available, settings
    from implementations.keras.model import DEFAULT_TRAIN_STEP, TRAIN_STEPS

    ok, reason = available()
    assert ok and "tensorflow backend" in reason
    s = settings()
    assert s["backend"] == "tensorflow"
    assert s["intra_op_threads"] == configured_threads() and s["inter_op_threads"] == 1
    assert s["tf32"] is False and s["onednn"] in (True, False)
    assert s["train_step"] == DEFAULT_TRAIN_STEP in TRAIN_STEPS
