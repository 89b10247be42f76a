"""The spec's optimizers, shared by the array backends (NumPy, CuPy, Numba).

Adam is Keras' form (``keras.optimizers.Adam``): at step ``t`` (1-based), with the bias
corrections folded into the step size and epsilon added to ``sqrt(v)`` *after* that::

    alpha_t = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)
    m += (g - m) * (1 - beta_1)
    v += (g * g - v) * (1 - beta_2)
    w -= alpha_t * m / (sqrt(v) + epsilon)

PyTorch's ``torch.optim.Adam`` divides by ``sqrt(v) / sqrt(1 - beta_2**t) + epsilon``
instead, i.e. an epsilon ``sqrt(1 - beta_2**t)`` times larger in Keras' terms; its first
steps differ from Keras' by far more than float64 rounding. ``alpha_t`` is computed in
Python floats (float64) whatever the arrays' dtype.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bench.core.spec import TrainConfig


def adam_step_size(train: TrainConfig, t: int) -> float:
    """``alpha_t``: the learning rate with both bias corrections folded in, step ``t >= 1``."""
    return train.lr * math.sqrt(1.0 - train.beta_2**t) / (1.0 - train.beta_1**t)


class Adam:
    """Keras' Adam over a dict of arrays (NumPy or CuPy), updated in place.

    ``m`` and ``v`` are created on the first update, shaped and typed as the gradients
    (the backend's internal layouts, which are the weights' own)."""

    def __init__(self, train: TrainConfig):
        self.train = train
        self.t = 0
        self.m: dict[str, Any] = {}
        self.v: dict[str, Any] = {}

    def update(self, w: dict[str, Any], grads: dict[str, Any]) -> None:
        """One step on every parameter named in ``grads`` (``w[name]`` updated in place)."""
        self.t += 1
        tr = self.train
        alpha = adam_step_size(tr, self.t)
        for name, g in grads.items():
            if name not in self.m:
                self.m[name], self.v[name] = np.zeros_like(g), np.zeros_like(g)  # CuPy arrays stay CuPy
            m, v = self.m[name], self.v[name]
            m += (g - m) * (1.0 - tr.beta_1)
            v += (g * g - v) * (1.0 - tr.beta_2)
            w[name] -= (alpha * m) / (v**0.5 + tr.epsilon)


def make_adam(train: TrainConfig) -> Adam | None:
    """An ``Adam`` for an adam spec, ``None`` for plain SGD."""
    return Adam(train) if train.optimizer == "adam" else None
