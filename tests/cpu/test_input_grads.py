"""No input gradient below the first parameter layer (NumPy, and CuPy's class on NumPy).

The MLP presets start with a flatten: the first dense layer's input gradient, an
(N, 800) @ (800, 784) GEMM, has nobody to receive it. ``dense_backward`` is wrapped to record
each call's ``need_dx`` (top layer first): every dense layer but the lowest gets True, the
lowest False. Negative control: with ``first_param`` reset to 0 (the old rule ``i > 0``) the
same check sees the wasted gradient. Agreement itself (gradients unchanged) is checked by
``test_agreement`` and ``test_cupy_logic`` on every preset.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.check.agreement import sample_batch
from bench.core.params import init_params
from bench.plan.presets import preset
from implementations.cupy.model import CupyModel
from implementations.numpy import mlp
from implementations.numpy.model import XpModel

BUILDS = {
    "numpy": lambda spec, params: XpModel(spec, params, "float32"),
    "cupy-on-numpy": lambda spec, params: CupyModel(spec, params, "float32", xp=np),
}


def dense_need_dx(monkeypatch, model, spec) -> list[bool]:
    """``need_dx`` of each ``dense_backward`` call of one ``loss_and_grads`` (top layer first)."""
    calls: list[bool] = []
    inner = mlp.dense_backward

    def recording(x, w, dy, need_dx=True):
        calls.append(bool(need_dx))
        return inner(x, w, dy, need_dx)

    monkeypatch.setattr(mlp, "dense_backward", recording)
    x, y = sample_batch(spec, 4, seed=0)
    model.loss_and_grads(x, y)
    return calls


@pytest.mark.parametrize("backend", sorted(BUILDS))
@pytest.mark.parametrize("name", ["mlp", "tiny-mlp"])
def test_lowest_dense_computes_no_input_gradient(monkeypatch, backend, name):
    spec = preset(name)
    assert spec.layers[0].type == "flatten"  # the case this guards: a flatten below the first dense
    model = BUILDS[backend](spec, init_params(spec, 0))
    calls = dense_need_dx(monkeypatch, model, spec)
    n_dense = sum(layer.type == "dense" for layer in spec.layers)
    assert calls == [True] * (n_dense - 1) + [False]


@pytest.mark.parametrize("backend", sorted(BUILDS))
def test_negative_control_wasted_input_gradient_is_seen(monkeypatch, backend):
    spec = preset("mlp")
    model = BUILDS[backend](spec, init_params(spec, 0))
    model.first_param = 0  # the old rule: every layer above index 0 computes its input gradient
    assert dense_need_dx(monkeypatch, model, spec)[-1] is True
