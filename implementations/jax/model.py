"""JAX network: the spec's layers as one pure function of ``(params, x)``, gradients by
``jax.value_and_grad``, every pass compiled once per shape by ``jax.jit`` (XLA) for the model's
device: the CPU for the ``jax`` backend, the first GPU for ``jax-gpu``.

Layouts: JAX takes the canonical ones as they are. Images stay NCHW and conv W stays
``(O, I, kh, kw)`` (``lax.conv_general_dilated`` with ``("NCHW", "OIHW", "NCHW")``), dense W
stays ``(in, out)`` and flattening NCHW is the canonical feature order, so nothing is
permuted in or out (``__init__`` asserts each shape).

Fusion: with ``cross_entropy`` the final softmax is fused into the loss (``log_softmax`` of the
logits, as the reference); with ``mse`` the loss is taken on the softmax output and XLA
differentiates through it. Max-pooling routes each window's gradient to its *first* maximum
(row-major), as the reference: the four cells of each 2x2 window are stacked and the
argmax's cell taken, so autodiff sends the gradient there (``lax.reduce_window``'s own
gradient may pick another cell on ties). ReLU is ``jax.nn.relu`` (gradient 0 at 0, as the
reference; ``jnp.maximum(x, 0)`` would give 0.5).

float64 needs ``jax_enable_x64``: it is switched on when this module is imported. float32
models still compute in float32 (every array is made in the model's dtype; Python scalars
are weakly typed), so both dtypes live in one process.

Dropout draws from a ``jax.random`` key seeded with ``seed`` at build, split every step.
Adam is Keras' form (``implementations.optim``), written as a pure update inside the jitted
``train_step``.

Threads: XLA's CPU client sizes its own pool to the cores it sees; with
``NNBENCH_THREADS=1`` and jax not yet imported, ``XLA_FLAGS`` gets
``--xla_cpu_multi_thread_eigen=false`` (single-threaded Eigen ops). Other counts cannot be
set through a public flag: ``settings()`` records what was configured and what XLA sees.
"""

from __future__ import annotations

import os
import sys
from functools import partial
from typing import Any

import numpy as np

from bench.core.model import Model, check_supported
from bench.core.params import check_params
from bench.core.spec import ModelSpec
from bench.core.threads import configured_threads
from implementations.optim import adam_step_size


def _configure_threads() -> int:
    """Before jax's first import only: one thread when the harness asks for one."""
    n = configured_threads()
    if n == 1 and "jax" not in sys.modules:
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_cpu_multi_thread_eigen" not in flags:
            os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
    return n


THREADS = _configure_threads()

import jax  # noqa: E402 - XLA_FLAGS must be set before jax is imported
import jax.numpy as jnp  # noqa: E402
from jax import lax  # noqa: E402

jax.config.update("jax_enable_x64", True)  # float64 models; float32 ones stay float32
# float32 dots and convolutions at full float32 precision: on a GPU, JAX's default may use TF32
# (10-bit mantissa), which no tolerance of ours admits; on the CPU it changes nothing.
jax.config.update("jax_default_matmul_precision", "highest")

LAYERS = ("conv2d", "maxpool2d", "flatten", "dense", "sigmoid", "relu", "tanh", "softmax", "dropout")
ACTIVATIONS = {"sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu, "tanh": jnp.tanh}
Params = dict[str, Any]


def jax_version() -> str:
    return jax.__version__


def cpu_device() -> Any:
    """The device of the ``jax`` backend: always the CPU, even where JAX's default is a GPU."""
    return jax.devices("cpu")[0]


def gpu_device() -> tuple[Any, str]:
    """``(the first GPU JAX sees, "")``, or ``(None, why not)``: the ``jax-gpu`` backend's device."""
    try:
        devices = jax.devices("gpu")
    except RuntimeError as e:  # no CUDA plugin, or no device for it
        return None, f"{type(e).__name__}: {e}"
    return (devices[0], "") if devices else (None, "jax.devices('gpu') is empty")


# ---------------------------------------------------------------------------- layers
def conv2d(x, w, b, kernel: int, padding: str):
    """(N, C, H, W) * (O, C, k, k) -> (N, O, H', W'); 'same' pads k // 2 each side (odd k)."""
    pad = [(kernel // 2, kernel // 2)] * 2 if padding == "same" else [(0, 0)] * 2
    out = lax.conv_general_dilated(x, w, (1, 1), pad, dimension_numbers=("NCHW", "OIHW", "NCHW"))
    return out + b[None, :, None, None]


def maxpool2d(x):
    """2x2, stride 2, floor: (N, C, H, W) -> (N, C, H//2, W//2); the first maximum of each
    window (row-major) is taken, so its gradient goes there alone."""
    ho, wo = x.shape[2] // 2, x.shape[3] // 2
    x = x[:, :, : 2 * ho, : 2 * wo]
    cells = jnp.stack([x[:, :, i::2, j::2] for i in (0, 1) for j in (0, 1)], axis=-1)  # (N, C, ho, wo, 4)
    arg = jnp.argmax(cells, axis=-1)  # first maximum wins
    return jnp.take_along_axis(cells, arg[..., None], axis=-1)[..., 0]


def dropout(x, key, rate: float):
    """Inverted dropout: keep with probability ``1 - rate``, scale kept units by ``1 / (1 - rate)``."""
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return x * keep.astype(x.dtype) * (1.0 / (1.0 - rate))


def run_layers(spec: ModelSpec, params: Params, x, key=None, upto: int | None = None) -> list:
    """Outputs of the first ``upto`` layers (all by default); the final softmax's entry is
    its *logits* (the loss fuses it). Dropout is on iff ``key`` is given."""
    outs = []
    layers = spec.layers if upto is None else spec.layers[:upto]
    keys = jax.random.split(key, len(layers)) if key is not None else None
    for i, layer in enumerate(layers):
        kind = layer.type
        if kind == "dense":
            x = x @ params[f"{i}.W"] + params[f"{i}.b"]
        elif kind == "conv2d":
            x = conv2d(x, params[f"{i}.W"], params[f"{i}.b"], layer.kernel, layer.padding)
        elif kind == "maxpool2d":
            x = maxpool2d(x)
        elif kind == "flatten":
            x = x.reshape(x.shape[0], -1)  # NCHW flatten = canonical feature order
        elif kind == "dropout":
            if keys is not None and layer.rate > 0:
                x = dropout(x, keys[i], layer.rate)
        elif kind == "softmax":
            x = jax.nn.softmax(x, axis=1) if i < len(spec.layers) - 1 else x  # last: logits
        else:
            x = ACTIVATIONS[kind](x)
        outs.append(x)
    return outs


def loss_fn(spec: ModelSpec, params: Params, x, y, key=None):
    """The spec's mean loss, as the reference: cross-entropy from the logits (log-softmax),
    or MSE averaged over every element of the softmax output."""
    z = run_layers(spec, params, x, key)[-1]
    if spec.layers[-1].type != "softmax":
        raise NotImplementedError("jax: the last layer must be softmax")
    if spec.loss == "cross_entropy":
        return -(y * jax.nn.log_softmax(z, axis=1)).sum() / x.shape[0]
    return jnp.mean((jax.nn.softmax(z, axis=1) - y) ** 2)


def adam_update(params: Params, grads: Params, m: Params, v: Params, alpha, beta_1, beta_2, eps):
    """Keras' Adam (``implementations.optim``) as a pure function: new (params, m, v)."""
    new_m = {k: m[k] + (g - m[k]) * (1.0 - beta_1) for k, g in grads.items()}
    new_v = {k: v[k] + (g * g - v[k]) * (1.0 - beta_2) for k, g in grads.items()}
    new_p = {k: params[k] - (alpha * new_m[k]) / (jnp.sqrt(new_v[k]) + eps) for k in params}
    return new_p, new_m, new_v


def _grads_and_key(spec: ModelSpec, params: Params, x, y, key):
    """(loss, grads, next key); dropout on iff ``key`` is given (then split: one for now)."""
    if key is None:
        loss, grads = jax.value_and_grad(partial(loss_fn, spec))(params, x, y)
        return loss, grads, None
    key, sub = jax.random.split(key)
    loss, grads = jax.value_and_grad(partial(loss_fn, spec))(params, x, y, sub)
    return loss, grads, key


def _sgd_step(spec: ModelSpec, params: Params, x, y, key, lr):
    """Plain SGD: (new params, loss before, next key)."""
    loss, grads, key = _grads_and_key(spec, params, x, y, key)
    return {k: p - lr * grads[k] for k, p in params.items()}, loss, key


def _adam_step(spec: ModelSpec, beta_1, beta_2, eps, params: Params, m: Params, v: Params, x, y, key, alpha):
    """Keras' Adam: (new params, m, v, loss before, next key)."""
    loss, grads, key = _grads_and_key(spec, params, x, y, key)
    params, m, v = adam_update(params, grads, m, v, alpha, beta_1, beta_2, eps)
    return params, m, v, loss, key


# ---------------------------------------------------------------------------- model
class JaxModel(Model):
    backend = "jax"

    def __init__(self, spec: ModelSpec, params: dict, dtype: str, seed: int = 0, device: Any = None):
        """``device``: where every array lives and every pass runs (default: the CPU); the
        jitted functions follow their inputs' device."""
        self.device = device if device is not None else cpu_device()
        check_supported(self.backend, spec, dtype, layers=LAYERS, losses=("cross_entropy", "mse"))
        if spec.layers[-1].type != "softmax":
            raise NotImplementedError("jax: the last layer must be softmax")
        check_params(spec, params)
        self.spec, self.dtype = spec, dtype
        shapes = spec.param_shapes()
        self.w: Params = {}
        for name, value in params.items():
            # Canonical layouts are JAX's own here (NCHW/OIHW conv, (in, out) dense): no conversion.
            a = jax.device_put(np.array(value, dtype=dtype), self.device)  # a copy: the caller's arrays are untouched
            assert tuple(a.shape) == tuple(shapes[name]), (name, a.shape, shapes[name])
            self.w[name] = a
        self.key = jax.device_put(jax.random.key(seed), self.device)  # dropout masks
        tr = spec.train
        self.adam = tr.optimizer == "adam"
        self.adam_t = 0
        self.m = {k: jnp.zeros_like(a) for k, a in self.w.items()}
        self.v = {k: jnp.zeros_like(a) for k, a in self.w.items()}
        self._value_and_grad = jax.jit(jax.value_and_grad(partial(loss_fn, spec)))
        self._probs = jax.jit(lambda p, x: jax.nn.softmax(run_layers(spec, p, x)[-1], axis=1))
        self._acts = jax.jit(lambda p, x: run_layers(spec, p, x))
        self._sgd = jax.jit(partial(_sgd_step, spec))
        self._adam = jax.jit(partial(_adam_step, spec, tr.beta_1, tr.beta_2, tr.epsilon))

    def _in(self, a: np.ndarray):
        return jax.device_put(np.asarray(a, dtype=self.dtype), self.device)

    # ------------------------------------------------------------------ contract
    def forward(self, x: np.ndarray) -> np.ndarray:
        return np.array(self.device_forward(self._in(x)))

    def activations(self, x: np.ndarray) -> list[np.ndarray]:
        outs = [np.array(a) for a in self._acts(self.w, self._in(x))]
        if self.spec.layers[-1].type == "softmax":  # the last entry is the logits: apply it
            outs[-1] = np.array(jax.nn.softmax(outs[-1], axis=1))
        return outs

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        loss, grads = self._value_and_grad(self.w, self._in(x), self._in(y))
        return float(loss), {k: np.array(g) for k, g in sorted(grads.items())}

    def sgd_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        self.w, loss, _ = self._sgd(self.w, self._in(x), self._in(y), None, lr)
        return float(loss)

    def optimizer_step(self, x: np.ndarray, y: np.ndarray) -> float:
        if not self.adam:
            return self.sgd_step(x, y, self.spec.train.lr)
        loss, _ = self._adam_step(self._in(x), self._in(y), None)
        return float(loss)

    def _adam_step(self, x, y, key):
        """One Adam step; returns (loss before it, next dropout key)."""
        self.adam_t += 1
        alpha = adam_step_size(self.spec.train, self.adam_t)  # Python float, as the other backends
        self.w, self.m, self.v, loss, key = self._adam(self.w, self.m, self.v, x, y, key, alpha)
        return loss, key

    def params(self) -> dict[str, np.ndarray]:
        return {k: np.array(a) for k, a in sorted(self.w.items())}  # host copies, never views

    def to_device(self, x: np.ndarray):
        return self._in(x)

    def device_forward(self, x):
        # jax dispatches asynchronously and ``sync`` waits for the weights only: wait for the result
        return jax.block_until_ready(self._probs(self.w, x))

    def device_loss_and_grads(self, x, y):
        return jax.block_until_ready(self._value_and_grad(self.w, x, y))

    def train_step(self, x, y) -> None:
        """One jitted call: forward with dropout + loss, ``value_and_grad``, the spec's
        optimizer; the dropout key is split inside and the next one returned."""
        if self.adam:
            _, self.key = self._adam_step(x, y, self.key)
        else:
            self.w, _, self.key = self._sgd(self.w, x, y, self.key, self.spec.train.lr)

    def sync(self) -> None:
        jax.block_until_ready(self.w)


def jax_settings(device: Any = None) -> dict:
    """What changes the numbers: versions, the device, x64, threads, what ``train_step`` fuses."""
    import jaxlib

    device = device if device is not None else cpu_device()
    return {
        "library": f"jax {jax.__version__}, jaxlib {jaxlib.__version__}",
        "device": f"{device} ({device.device_kind})",
        "devices_seen": ", ".join(str(d) for d in jax.devices()),
        "matmul_precision": str(jax.config.jax_default_matmul_precision),
        "configured_threads": configured_threads(),
        "threads": "XLA's own CPU pool (sized to the visible cores); one thread only with NNBENCH_THREADS=1",
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "jax_enable_x64": bool(jax.config.jax_enable_x64),
        "x64_note": "enabled at import for float64 models; float32 models keep float32 arrays",
        "cross_entropy": "logits + log_softmax in the loss (softmax fused)",
        "train_step": "one jax.jit: forward with dropout + loss, value_and_grad, SGD or Keras Adam",
        "maxpool": "first maximum of each window gets the gradient (stacked cells + argmax)",
    }
