"""init_params: the one place weights are made."""

import numpy as np
import pytest

from bench.core.params import check_params, init_params, load_params, save_params
from bench.plan.presets import preset


@pytest.mark.parametrize("name", ["mlp", "cnn", "tiny-cnn"])
def test_names_shapes_dtype_and_reproducibility(name):
    spec = preset(name)
    p = init_params(spec, seed=3)
    check_params(spec, p)
    assert all(v.dtype == np.float64 for v in p.values())
    q = init_params(spec, seed=3)
    assert all(np.array_equal(p[k], q[k]) for k in p)
    r = init_params(spec, seed=4)
    assert not np.array_equal(p[next(iter(p))], r[next(iter(r))])


def test_glorot_for_sigmoid_he_for_relu():
    mlp, cnn = init_params(preset("mlp"), 0), init_params(preset("cnn").replace(init="he_uniform"), 0)
    # dense 784 -> 800 followed by sigmoid: Glorot limit sqrt(6 / 1584)
    assert np.abs(mlp["1.W"]).max() <= np.sqrt(6 / 1584) and np.abs(mlp["1.W"]).max() > 0.9 * np.sqrt(6 / 1584)
    # conv 1 -> 32, 3x3 followed by relu: He limit sqrt(6 / 9)
    assert np.abs(cnn["0.W"]).max() > np.sqrt(6 / (9 + 288))  # beyond what Glorot would allow
    assert np.abs(cnn["0.W"]).max() <= np.sqrt(6 / 9)
    assert not mlp["1.b"].any()
    assert init_params(preset("mlp"), 0, bias="uniform")["1.b"].any()


def test_glorot_uniform_is_the_course_default():
    spec = preset("cnn")
    assert spec.init == "glorot_uniform" and preset("dnn").init == "glorot_uniform"
    glorot, he = init_params(spec, 0), init_params(spec.replace(init="he_uniform"), 0)
    assert np.abs(glorot["0.W"]).max() <= np.sqrt(6 / (9 + 288))  # conv 1 -> 32, 3x3
    # the same stream, only the limits differ: He / Glorot = sqrt((fan_in + fan_out) / fan_in)
    np.testing.assert_allclose(he["0.W"] / glorot["0.W"], np.sqrt((9 + 288) / 9))
    np.testing.assert_array_equal(he["12.W"], glorot["12.W"])  # the softmax layer: Glorot in both


def test_save_load_round_trip(tmp_path):
    p = init_params(preset("tiny-cnn"), 1)
    save_params(p, tmp_path / "p.npz")
    q = load_params(tmp_path / "p.npz")
    assert set(p) == set(q) and all(np.array_equal(p[k], q[k]) for k in p)


def test_check_params_rejects_wrong_shapes():
    spec = preset("tiny-mlp")
    p = init_params(spec, 0)
    p["1.W"] = p["1.W"].T
    with pytest.raises(ValueError, match="1.W"):
        check_params(spec, p)
