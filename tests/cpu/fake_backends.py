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


class TorchEpsilonAdam:
    """``torch.optim.Adam``'s update: epsilon added to ``sqrt(v / (1 - beta_2**t))``, i.e.
    after the bias correction of ``v``, not to ``sqrt(v)`` as Keras (the spec) does."""

    def __init__(self, train):
        from implementations.optim import Adam

        self.inner = Adam(train)

    def update(self, w, grads):
        a, tr = self.inner, self.inner.train
        a.t += 1
        for name, g in grads.items():
            m = a.m.setdefault(name, np.zeros_like(g))
            v = a.v.setdefault(name, np.zeros_like(g))
            m += (g - m) * (1 - tr.beta_1)
            v += (g * g - v) * (1 - tr.beta_2)
            denom = np.sqrt(v) / np.sqrt(1 - tr.beta_2**a.t) + tr.epsilon
            w[name] -= tr.lr / (1 - tr.beta_1**a.t) * m / denom


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
    if kind == "torch_adam_epsilon":  # Adam with epsilon placed the PyTorch way
        model.adam = TorchEpsilonAdam(spec.train)
    if kind == "timed_forward_off":  # the host contract is right, what the harness times is not
        orig4 = model.device_forward
        model.forward = lambda x: model._host(orig4(model._to_internal(x)))  # XpModel.forward, unbroken
        model.device_forward = lambda x: orig4(x) * 1.001
    if kind == "timed_grad_dropped":  # the timed loss_and_grads drops one gradient
        orig5 = model.device_loss_and_grads

        def loss_and_grads(x, y):  # XpModel.loss_and_grads, on the unbroken device form
            loss, g = orig5(model._to_internal(x), model._to_internal(y))
            return float(loss), {k: model._param_out(k, v) for k, v in sorted(g.items())}

        model.loss_and_grads = loss_and_grads

        def device_loss_and_grads(x, y):
            loss, g = orig5(x, y)
            return loss, dict(sorted(g.items())[1:])

        model.device_loss_and_grads = device_loss_and_grads
    if kind == "float16_out":
        orig3 = model.forward
        model.forward = lambda x: orig3(x).astype(np.float16)
    return model
