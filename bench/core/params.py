"""The one place weights are created.

``init_params(spec, seed)`` returns float64 arrays named ``"{i}.W"`` / ``"{i}.b"``, ``i``
the layer's index in ``spec.layers``. Canonical layouts (every backend converts from
and back to these):

- dense W ``(in, out)``, b ``(out,)``; the input of a dense after ``flatten`` is the
  NCHW flatten order ``c * H * W + h * W + w``;
- conv2d W ``(out_channels, in_channels, kh, kw)`` (cross-correlation, as every framework
  computes it), b ``(out_channels,)``.

Initialisation follows the spec's ``init``: ``glorot_uniform`` (Keras' default, what the
course's models get) draws every kernel from Glorot uniform
(``U(-sqrt(6 / (fan_in + fan_out)), +...)``); ``he_uniform`` gives a kernel whose next
activation is ``relu`` He uniform (``U(-sqrt(6 / fan_in), +sqrt(6 / fan_in))``) and every
other kernel Glorot. Both draw the same random stream, only the limits differ. Biases
are zero, as in Keras, unless ``bias="uniform"`` asks for
``U(-0.1, 0.1)``: the agreement check uses that so a bias wired to the wrong axis
cannot hide behind zeros.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.core.spec import ModelSpec

Params = dict[str, np.ndarray]


def _next_activation(spec: ModelSpec, i: int) -> str | None:
    for layer in spec.layers[i + 1 :]:
        if layer.type in ("sigmoid", "relu", "tanh", "softmax"):
            return layer.type
        if layer.has_params:
            return None
    return None


def init_params(spec: ModelSpec, seed: int = 0, bias: str = "zeros") -> Params:
    """Float64 parameters for ``spec``, reproducible from ``seed``."""
    if bias not in ("zeros", "uniform"):
        raise ValueError(f"bias must be 'zeros' or 'uniform', got {bias!r}")
    rng = np.random.default_rng(seed)
    params: Params = {}
    for name, shape in spec.param_shapes().items():
        i = int(name.split(".")[0])
        if name.endswith(".W"):
            if len(shape) == 2:  # dense (in, out)
                fan_in, fan_out = shape
            else:  # conv (O, I, kh, kw)
                rf = shape[2] * shape[3]
                fan_in, fan_out = shape[1] * rf, shape[0] * rf
            if spec.init == "he_uniform" and _next_activation(spec, i) == "relu":
                limit = np.sqrt(6.0 / fan_in)
            else:
                limit = np.sqrt(6.0 / (fan_in + fan_out))
            params[name] = rng.uniform(-limit, limit, size=shape)
        else:
            params[name] = np.zeros(shape) if bias == "zeros" else rng.uniform(-0.1, 0.1, size=shape)
    return params


def check_params(spec: ModelSpec, params: Params) -> None:
    """Raise ValueError unless ``params`` has exactly the spec's names and shapes."""
    want = spec.param_shapes()
    if set(params) != set(want):
        raise ValueError(
            f"parameter names differ: missing {sorted(set(want) - set(params))}, "
            f"unexpected {sorted(set(params) - set(want))}"
        )
    for name, shape in want.items():
        if tuple(params[name].shape) != shape:
            raise ValueError(f"parameter {name}: expected shape {shape}, got {params[name].shape}")


def save_params(params: Params, path: str | Path) -> None:
    np.savez(path, **params)


def load_params(path: str | Path) -> Params:
    with np.load(path) as f:
        return {k: f[k].astype(np.float64) for k in f.files}
