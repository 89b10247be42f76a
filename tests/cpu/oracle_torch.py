"""An independent float64 oracle: the spec run functionally with PyTorch autograd.

Written from the spec alone (``torch.nn.functional``), sharing no code with any backend,
so the NumPy reference is checked against something that was not derived from it.
"""

from __future__ import annotations

import numpy as np


def _forward(torch, spec, w, x):
    """Returns (output, logits before a final softmax or None)."""
    F = torch.nn.functional
    logits = None
    for i, layer in enumerate(spec.layers):
        kind = layer.type
        if kind == "dense":
            x = x @ w[f"{i}.W"] + w[f"{i}.b"]  # canonical (in, out)
        elif kind == "conv2d":
            pad = layer.kernel // 2 if layer.padding == "same" else 0
            x = F.conv2d(x, w[f"{i}.W"], w[f"{i}.b"], padding=pad)  # canonical (O, I, kh, kw) = torch's
        elif kind == "maxpool2d":
            x = F.max_pool2d(x, 2)
        elif kind == "flatten":
            x = x.reshape(x.shape[0], -1)
        elif kind in ("sigmoid", "relu", "tanh"):
            x = getattr(torch, kind)(x)
        elif kind == "softmax":
            logits, x = x, torch.softmax(x, dim=1)
    return x, logits


def _loss(torch, spec, out, logits, y):
    if spec.loss == "mse":
        return ((out - y) ** 2).mean()
    return -(y * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()


def _adam(torch, train, w, gs, state):
    """Keras' Adam (keras.optimizers.Adam's documented update), written here from its
    formula: bias corrections in the step size, epsilon added to sqrt(v)."""
    state["t"] += 1
    t = state["t"]
    lr_t = train.lr * (1 - train.beta_2**t) ** 0.5 / (1 - train.beta_1**t)
    for (name, p), g in zip(w.items(), gs, strict=True):
        m = state["m"].setdefault(name, torch.zeros_like(g))
        v = state["v"].setdefault(name, torch.zeros_like(g))
        m.mul_(train.beta_1).add_((1 - train.beta_1) * g)
        v.mul_(train.beta_2).add_((1 - train.beta_2) * g * g)
        p -= lr_t * m / (torch.sqrt(v) + train.epsilon)


def oracle(spec, params, x, y, steps_batches=(), lr=None):
    """forward probabilities, loss, gradients, the losses of the spec's optimizer steps
    (SGD at ``lr``, default the spec's, or Adam) on ``steps_batches`` and the params after
    them, all float64 NumPy."""
    import torch

    w = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.items()}
    xt, yt = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)
    out, logits = _forward(torch, spec, w, xt)
    loss = _loss(torch, spec, out, logits, yt)
    grads = torch.autograd.grad(loss, list(w.values()))
    result = {
        "probs": out.detach().numpy(),
        "loss": float(loss.detach()),
        "grads": {k: g.numpy() for k, g in zip(w, grads, strict=True)},
        "step_losses": [],
    }
    lr = spec.train.lr if lr is None else lr
    adam = {"t": 0, "m": {}, "v": {}}
    for xb, yb in steps_batches:
        o, lg = _forward(torch, spec, w, torch.tensor(xb))
        step_loss = _loss(torch, spec, o, lg, torch.tensor(yb))
        gs = torch.autograd.grad(step_loss, list(w.values()))
        with torch.no_grad():
            if spec.train.optimizer == "adam":
                _adam(torch, spec.train, w, gs, adam)
            else:
                for t, g in zip(w.values(), gs, strict=True):
                    t -= lr * g
        result["step_losses"].append(float(step_loss.detach()))
    result["params"] = {k: t.detach().numpy().copy() for k, t in w.items()}
    return result


def as_np(a):
    return np.asarray(a, dtype=np.float64)
