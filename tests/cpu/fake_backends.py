"""Deliberately broken backends for negative controls: each wraps the NumPy reference
and breaks one thing."""

from __future__ import annotations

import numpy as np

REQUIRES: tuple[str, ...] = ()
BREAK = {"kind": "weight"}


def available():
    return True, "test double"


def settings():
    return {"device": "cpu"}


def build(spec, params, dtype):
    from implementations.numpy.model import XpModel

    kind = BREAK["kind"]
    if kind == "unsupported":
        raise NotImplementedError("fake: no such thing")
    params = {k: v.copy() for k, v in params.items()}
    if kind == "weight":  # one weight of the second parametrised layer, slightly off
        name = [k for k in params if k.endswith(".W")][1]
        params[name].flat[0] += 1e-3
    model = XpModel(spec, params, dtype)
    if kind == "grad_scale":
        orig = model.loss_and_grads

        def loss_and_grads(x, y):
            loss, g = orig(x, y)
            return loss, {k: v * (1.001 if k.endswith(".b") else 1.0) for k, v in g.items()}

        model.loss_and_grads = loss_and_grads
    if kind == "transposed_grad":
        orig2 = model.loss_and_grads

        def loss_and_grads(x, y):
            loss, g = orig2(x, y)
            name = next(k for k in g if k.endswith(".W") and g[k].ndim == 2)
            g[name] = np.ascontiguousarray(g[name].T)
            return loss, g

        model.loss_and_grads = loss_and_grads
    if kind == "float16_out":
        orig3 = model.forward
        model.forward = lambda x: orig3(x).astype(np.float16)
    return model
