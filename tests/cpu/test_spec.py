"""Model specs: presets, round trips, shape inference, and errors that name the layer."""

import json

import pytest

from bench.core.spec import ModelSpec, SpecError
from bench.plan.presets import load_spec_file, preset, preset_names, random_spec


def test_presets_exist_and_round_trip():
    assert {"mlp", "cnn", "mlp-relu", "tiny-mlp", "tiny-cnn"} <= set(preset_names())
    for name in preset_names():
        spec = preset(name)
        assert ModelSpec.from_dict(spec.to_dict()) == spec
        assert spec.input_shape == tuple(spec.to_dict()["input_shape"])


def test_mlp_preset_is_the_course_model():
    spec = preset("mlp")
    assert [l.type for l in spec.layers] == [
        "flatten",
        "dense",
        "sigmoid",
        "dropout",
        "dense",
        "sigmoid",
        "dropout",
        "dense",
        "softmax",
    ]
    assert [l.units for l in spec.layers if l.type == "dense"] == [800, 800, 10]
    assert all(l.rate == 0.4 for l in spec.layers if l.type == "dropout")
    assert (spec.loss, spec.train.lr, spec.train.batch_size, spec.train.epochs) == ("mse", 0.1, 50, 40)
    assert spec.num_params() == 784 * 800 + 800 + 800 * 800 + 800 + 800 * 10 + 10


def test_cnn_preset_shapes_floor_7_to_3():
    spec = preset("cnn")
    shapes = spec.shapes()
    assert shapes[2] == (32, 14, 14) and shapes[5] == (64, 7, 7) and shapes[8] == (128, 3, 3)
    assert shapes[9] == (1152,)
    assert (spec.loss, spec.train.lr, spec.train.epochs) == ("mse", 0.008, 20)
    assert spec.param_shapes()["0.W"] == (32, 1, 3, 3)
    assert spec.param_shapes()["10.W"] == (1152, 200)


def _base():
    return preset("tiny-cnn").to_dict()


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["layers"].insert(1, {"type": "batchnorm"}), "layer 1: unknown layer type 'batchnorm'"),
        (lambda d: d["layers"][0].pop("filters"), "layer 0 (conv2d): missing field 'filters'"),
        (lambda d: d["layers"][0].update(kernel=4), "layer 0 (conv2d): kernel must be a positive odd int"),
        (lambda d: d["layers"][0].update(filters=-3), "layer 0 (conv2d): filters must be positive"),
        (lambda d: d["layers"][7].update(units=-1), "layer 7 (dense): units must be positive"),
        (lambda d: d["layers"][3].update(kernel=9), "layer 3 (conv2d): kernel 9 does not fit"),
        (lambda d: d["layers"].pop(6), "layer 6 (dense): needs a flat input"),
        (
            lambda d: d["layers"].insert(0, {"type": "softmax"}),
            "layer 0 (softmax): softmax is only supported as the last",
        ),
        (lambda d: d["layers"][9].update(rate=1.5), "layer 9 (dropout): rate must be in [0, 1)"),
        (lambda d: d["layers"][2].update(size=3), "layer 2 (maxpool2d): only size 2"),
        (lambda d: d.pop("loss"), "missing field 'loss'"),
        (lambda d: d.update(loss="hinge"), "loss must be one of"),
        (lambda d: d["train"].pop("lr"), "train: missing field 'lr'"),
        (lambda d: d.update(input_shape=[28, 28]), "input_shape must be [C, H, W]"),
    ],
)
def test_invalid_specs_name_layer_and_problem(mutate, message):
    d = _base()
    mutate(d)
    with pytest.raises(SpecError) as e:
        ModelSpec.from_dict(d)
    assert message in str(e.value)


def test_cross_entropy_needs_softmax_last():
    d = _base()
    d["layers"].pop()  # drop the softmax
    with pytest.raises(SpecError, match="cross_entropy needs a softmax"):
        ModelSpec.from_dict(d)


def test_spec_files_toml_and_json(tmp_path):
    d = preset("tiny-mlp").to_dict()
    (tmp_path / "m.json").write_text(json.dumps(d))
    assert load_spec_file(tmp_path / "m.json") == preset("tiny-mlp")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        load_spec_file(tmp_path / "bad.json")
    with pytest.raises(SpecError, match="not found"):
        load_spec_file(tmp_path / "missing.toml")
    with pytest.raises(SpecError, match="unknown preset 'nope'"):
        preset("nope")


def test_random_specs_are_valid_and_varied():
    specs = [random_spec(s) for s in range(40)]
    kinds = {l.type for s in specs for l in s.layers}
    assert kinds == {"conv2d", "maxpool2d", "flatten", "dense", "dropout", "sigmoid", "relu", "tanh", "softmax"}
    assert {s.loss for s in specs} == {"mse", "cross_entropy"}
    assert any(l.type == "conv2d" and l.padding == "valid" for s in specs for l in s.layers)


def test_flops_scale_with_batch():
    spec = preset("mlp")
    f1, f50 = spec.flops(1), spec.flops(50)
    assert f1["forward"] >= 2 * (784 * 800 + 800 * 800 + 800 * 10)
    assert f50["forward"] == 50 * f1["forward"]
    assert f50["train_step"] == f50["forward"] + f50["backward"] + f50["update"]


def test_flops_match_a_hand_count():
    """Per sample, counted by hand from the layer tables of the two course presets."""
    mlp = preset("mlp").flops(1)
    mm = 2 * 784 * 800 + 2 * 800 * 800 + 2 * 800 * 10  # three dense layers
    elem = (800 + 800) + (800 + 800) + (10 + 10)  # bias + sigmoid, bias + sigmoid, bias + softmax
    assert mlp["forward"] == mm + elem == 2_553_620
    # weight grads of all three, input grads of the last two (none for the first), elementwise x2
    assert mlp["backward"] == (mm) + (2 * 800 * 800 + 2 * 800 * 10) + 2 * elem == 3_852_840
    assert mlp["update"] == 2 * (784 * 800 + 800 + 800 * 800 + 800 + 800 * 10 + 10)
    cnn = preset("cnn").flops(1)
    conv = [2 * 32 * 28 * 28 * 1 * 9, 2 * 64 * 14 * 14 * 32 * 9, 2 * 128 * 7 * 7 * 64 * 9]
    dense = [2 * 1152 * 200, 2 * 200 * 10]
    # each conv: bias + relu on its output, 2x2 pool comparisons over the same elements
    elem = 3 * (32 * 28 * 28) + 3 * (64 * 14 * 14) + 3 * (128 * 7 * 7) + (200 + 200) + (10 + 10)
    assert cnn["forward"] == sum(conv) + sum(dense) + elem == 15_499_204
    assert cnn["backward"] == 2 * (sum(conv) + sum(dense)) - conv[0] + 2 * elem == 30_546_824
    assert preset("cnn").flops(50)["train_step"] == 50 * (15_499_204 + 30_546_824) + cnn["update"]
