"""Property test of the NumPy reference against the independent torch float64 oracle, over
specs drawn by hypothesis (the same space as ``bench.core.spec.random_spec``). Where
``random_spec(seed)`` gives a fixed sample, hypothesis explores and, on a failure, shrinks to
the smallest failing network (fewest layers, smallest sizes) before reporting it.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_reference import _reference_vs_oracle

from bench.core.spec import ACTIVATIONS, LOSSES, PADDINGS, ModelSpec, SpecError

HIDDEN = st.sampled_from([a for a in ACTIVATIONS if a != "softmax"])


@st.composite
def conv_block(draw: Any) -> list[dict[str, Any]]:
    out = [
        {
            "type": "conv2d",
            "filters": draw(st.integers(1, 5)),
            "kernel": draw(st.sampled_from([1, 3, 5])),
            "padding": draw(st.sampled_from(PADDINGS)),
        },
        {"type": draw(HIDDEN)},
    ]
    return out + ([{"type": "maxpool2d", "size": 2}] if draw(st.booleans()) else [])


@st.composite
def dense_block(draw: Any) -> list[dict[str, Any]]:
    out = [{"type": "dense", "units": draw(st.integers(3, 13))}, {"type": draw(HIDDEN)}]
    return out + ([{"type": "dropout", "rate": 0.3}] if draw(st.booleans()) else [])


@st.composite
def specs(draw: Any) -> ModelSpec:
    layers = [layer for block in draw(st.lists(conv_block(), max_size=2)) for layer in block]
    layers.append({"type": "flatten"})
    layers += [layer for block in draw(st.lists(dense_block(), max_size=2)) for layer in block]
    layers += [{"type": "dense", "units": draw(st.sampled_from([3, 10]))}, {"type": "softmax"}]
    d = {
        "name": "hypothesis",
        "input_shape": [draw(st.integers(1, 3)), draw(st.integers(5, 11)), draw(st.integers(5, 11))],
        "loss": draw(st.sampled_from(LOSSES)),
        "layers": layers,
        "train": {"lr": 0.05, "batch_size": 4, "epochs": 1},
    }
    try:
        return ModelSpec.from_dict(d)
    except SpecError:  # e.g. a valid-padded kernel larger than the image
        from hypothesis import reject

        reject()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=specs(), seed=st.integers(0, 2**16))
def test_reference_matches_oracle_on_any_spec(spec, seed):
    rows = _reference_vs_oracle(spec, batch=3, seed=seed)
    bad = [r for r in rows if not r["ok"]]
    assert not bad, f"{spec.to_dict()}: {bad[:3]}"


def test_property_strategy_covers_the_vocabulary():
    """The strategy reaches every layer type, both paddings and both losses (else the property
    would silently test less than random_spec)."""
    seen_types, seen_pad, seen_loss = set(), set(), set()

    @settings(max_examples=200, deadline=None, database=None)
    @given(spec=specs())
    def collect(spec):
        seen_types.update(layer.type for layer in spec.layers)
        seen_pad.update(layer.padding for layer in spec.layers if layer.type == "conv2d")
        seen_loss.add(spec.loss)

    collect()
    assert {"conv2d", "maxpool2d", "dense", "dropout", "flatten", "softmax"} <= seen_types
    assert seen_pad == set(PADDINGS) and seen_loss == set(LOSSES)
