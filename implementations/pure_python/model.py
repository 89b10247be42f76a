"""The network on Python lists; see ``ops`` for the kernels and layouts.

Weights are held twice, in the layouts the loops want, and both copies are updated
together: dense W as ``(in, out)`` rows (for ``dx``) and ``(out, in)`` rows (forward);
conv W as ``(O, kh*kw*C)`` rows (forward, dW) and their transpose (``dx``). The SGD update
is applied to the row layout gradients come in and the other copy is re-transposed (a
``zip``, C speed). The last softmax is fused with cross-entropy; with MSE it is
back-propagated through its Jacobian. Everything is float64.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np

from bench.core.model import Model, check_supported
from bench.core.params import check_params
from bench.core.spec import ModelSpec
from implementations.optim import adam_step_size

from . import ops


def _hwc(shape: tuple[int, ...]) -> tuple[int, int, int] | None:
    return (shape[1], shape[2], shape[0]) if len(shape) == 3 else None


class PurePythonModel(Model):
    """Computes in float64 whatever ``dtype`` is asked (Python floats are doubles); every
    array it hands back is float64."""

    compute_dtype = "float64"

    def __init__(self, spec: ModelSpec, params: dict, dtype: str, seed: int = 0):
        check_supported("pure_python", spec, dtype)
        check_params(spec, params)
        self.spec, self.dtype, self.layers = spec, dtype, spec.layers
        self.in_shapes, self.out_shapes = spec.input_shapes(), spec.shapes()
        self.rng = random.Random(seed)  # dropout masks
        self.adam_t = 0  # Adam's step count; its moments, in the update layout, per name
        self.adam_mv: dict[str, tuple[Any, Any]] = {}
        self.w: dict[str, Any] = {}  # layout the update works on
        self.wt: dict[str, Any] = {}  # the transposed copy
        for name, value in params.items():
            a = np.asarray(value, dtype=np.float64)
            if name.endswith(".b"):
                self.w[name] = a.tolist()
                continue
            if a.ndim == 4:  # conv (O, C, kh, kw) -> (O, kh*kw*C)
                a = a.transpose(0, 2, 3, 1).reshape(a.shape[0], -1)
            else:  # dense (in, out) -> update layout (out, in)
                a = a.T
            self.w[name], self.wt[name] = a.tolist(), a.T.tolist()
        self.perms = {}
        for i, layer in enumerate(self.layers):
            if layer.type == "flatten" and len(self.in_shapes[i]) == 3 and self.in_shapes[i][0] > 1:
                perm = ops.hwc_to_chw_perm(_hwc(self.in_shapes[i]))
                inv = [0] * len(perm)
                for f, p in enumerate(perm):
                    inv[p] = f
                self.perms[i] = (perm, inv)
        # layers below the first parameter layer need no input gradient
        self.need_dx = [i > spec.first_param_layer for i in range(len(self.layers))]

    # ------------------------------------------------------------------ forward
    def _layer_forward(self, i: int, x, train: bool):
        """One layer: (output, cache for backward)."""
        layer, kind = self.layers[i], self.layers[i].type
        if kind == "dense":
            return ops.dense_forward(x, self.w[f"{i}.W"], self.w[f"{i}.b"]), x
        if kind == "conv2d":
            out, cols = ops.conv_forward(
                x, _hwc(self.in_shapes[i]), self.w[f"{i}.W"], self.w[f"{i}.b"], layer.kernel, layer.padding
            )
            return out, cols
        if kind == "maxpool2d":
            return ops.maxpool_forward(x, _hwc(self.in_shapes[i]))
        if kind == "flatten":
            return (ops.permute(x, self.perms[i][0]) if i in self.perms else x), None
        if kind == "dropout":
            if not train or layer.rate == 0:
                return x, None
            mask = ops.dropout_mask(self.rng.random, len(x), len(x[0]), layer.rate)
            return ops.mul_rows(x, mask), mask
        if kind == "softmax":
            return ops.softmax(x), x
        out = ops.act_forward(kind, x)
        return out, out

    def _forward(self, x, train: bool):
        caches = []
        for i in range(len(self.layers)):
            x, cache = self._layer_forward(i, x, train)
            caches.append(cache)
        return x, caches

    # ------------------------------------------------------------------ backward
    def _layer_backward(self, i: int, cache, out, dy, grads: dict):
        layer, kind, need_dx = self.layers[i], self.layers[i].type, self.need_dx[i]
        if kind == "dense":
            dx, grads[f"{i}.W"], grads[f"{i}.b"] = ops.dense_backward(cache, self.wt[f"{i}.W"], dy, need_dx)
            return dx
        if kind == "conv2d":
            dx, grads[f"{i}.W"], grads[f"{i}.b"] = ops.conv_backward(
                cache, _hwc(self.in_shapes[i]), self.wt[f"{i}.W"], dy, layer.kernel, layer.padding, need_dx
            )
            return dx
        if not need_dx:
            return None
        if kind == "maxpool2d":
            c, h, w = self.in_shapes[i]
            return ops.maxpool_backward(cache, c * h * w, dy)
        if kind == "flatten":
            return ops.permute(dy, self.perms[i][1]) if i in self.perms else dy
        if kind == "dropout":
            return dy if cache is None else ops.mul_rows(dy, cache)
        if kind == "softmax":
            return ops.softmax_backward(out, dy)
        return ops.act_backward(kind, cache, dy)

    def _step(self, x, y, train: bool, lr: float | None):
        """Forward, loss, backward and (when ``lr``) the in-place SGD update."""
        out, caches = self._forward(x, train)
        top = len(self.layers) - 1
        if self.spec.loss == "cross_entropy":  # last layer is softmax: fused, cache = logits
            loss, dy = ops.cross_entropy_from_logits(caches[top], y)
            top -= 1
        else:
            loss, dy = ops.mse(out, y)
        grads: dict[str, Any] = {}
        for i in range(top, -1, -1):
            dy = self._layer_backward(i, caches[i], out, dy, grads)
        if lr is not None:
            self._update(grads, lr)
        return loss, grads

    def _update(self, grads: dict, lr: float) -> None:
        """w -= lr * g on the update layout; the transposed copy is rebuilt to stay in sync."""
        for name, g in grads.items():
            if name.endswith(".b"):
                self.w[name] = ops.axpy(self.w[name], g, lr)
            else:
                self.w[name] = ops.axpy_rows(self.w[name], g, lr)
                self.wt[name] = ops.transpose(self.w[name])

    def _adam(self, grads: dict) -> None:
        """Keras' Adam on the update layout (row by row for kernels); the transposed copy is
        rebuilt as in ``_update``."""
        tr = self.spec.train
        self.adam_t += 1
        alpha, hp = adam_step_size(tr, self.adam_t), (tr.beta_1, tr.beta_2, tr.epsilon)
        for name, g in grads.items():
            rows = not name.endswith(".b")
            w, gr = (self.w[name], g) if rows else ([self.w[name]], [g])
            zeros = [[0.0] * len(r) for r in gr]
            m, v = self.adam_mv.get(name, (zeros, [list(r) for r in zeros]))
            new = [ops.adam(*t, alpha, hp) for t in zip(w, gr, m, v, strict=True)]
            w = [r[0] for r in new]
            self.adam_mv[name] = ([r[1] for r in new], [r[2] for r in new])
            if rows:
                self.w[name], self.wt[name] = w, ops.transpose(w)
            else:
                self.w[name] = w[0]

    def _optimize(self, x, y, train: bool) -> float:
        """Forward, backward and one step of the spec's optimizer."""
        if self.spec.train.optimizer == "sgd":
            loss, _ = self._step(x, y, train, self.spec.train.lr)
        else:
            loss, grads = self._step(x, y, train, None)
            self._adam(grads)
        return loss

    # ------------------------------------------------------------------ conversions
    def _canonical(self, i: int, name: str, rows) -> np.ndarray:
        """Update-layout rows (weights or their gradients) -> canonical NumPy array."""
        a = np.array(rows, dtype=np.float64)
        if name.endswith(".b"):
            return a
        if self.layers[i].type == "dense":
            return np.ascontiguousarray(a.T)  # (out, in) -> (in, out)
        c, k = self.in_shapes[i][0], self.layers[i].kernel
        return np.ascontiguousarray(a.reshape(a.shape[0], k, k, c).transpose(0, 3, 1, 2))

    def _act_out(self, i: int, rows) -> np.ndarray:
        a = np.array(rows, dtype=np.float64)
        shape = self.out_shapes[i]
        if len(shape) == 3:
            c, h, w = shape
            a = np.ascontiguousarray(a.reshape(-1, h, w, c).transpose(0, 3, 1, 2))
        return a

    # ------------------------------------------------------------------ contract
    def to_device(self, x: np.ndarray):
        """Host batch -> list of flat per-sample float lists (images in HWC order)."""
        a = np.asarray(x, dtype=np.float64)
        if a.ndim == 4:
            a = a.transpose(0, 2, 3, 1)
        return a.reshape(a.shape[0], -1).tolist()

    def forward(self, x: np.ndarray) -> np.ndarray:
        return np.array(self.device_forward(self.to_device(x)), dtype=np.float64)

    def device_forward(self, x: list) -> list:
        return self._forward(x, False)[0]  # lists of per-sample lists

    def device_loss_and_grads(self, x: list, y: list) -> tuple[float, dict]:
        return self._step(x, y, False, None)  # flat lists in the internal (HWC) order

    def activations(self, x: np.ndarray) -> list[np.ndarray]:
        h, outs = self.to_device(x), []
        for i in range(len(self.layers)):
            h, _ = self._layer_forward(i, h, False)
            outs.append(self._act_out(i, h))
        return outs

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        loss, grads = self.device_loss_and_grads(self.to_device(x), self.to_device(y))
        return float(loss), {k: self._canonical(int(k.split(".")[0]), k, g) for k, g in sorted(grads.items())}

    def sgd_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        loss, _ = self._step(self.to_device(x), self.to_device(y), False, float(lr))
        return float(loss)

    def params(self) -> dict[str, np.ndarray]:
        return {k: self._canonical(int(k.split(".")[0]), k, v) for k, v in sorted(self.w.items())}

    def optimizer_step(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(self._optimize(self.to_device(x), self.to_device(y), False))

    def train_step(self, x, y) -> None:
        self._optimize(x, y, True)
