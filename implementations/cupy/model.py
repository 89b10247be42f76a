"""The CuPy network: the NumPy reference's ``XpModel`` with its hot path on GPU kernels.

Shared with NumPy (one ``xp`` code path): parameter layouts and conversions, GEMMs
(``@`` is cuBLAS on CuPy), dense/conv weight gradients, flatten, the MSE-without-softmax
loss. Replaced by the kernel table (``kernels.py``), where a fused kernel saves launches
and memory passes:

- forward: GEMM without bias, then one ``bias_act`` kernel when an activation follows a
  dense/conv layer (the pre-activation is never stored); im2col with inline padding;
  max-pool with an int8 argmax; dropout mask + apply in one kernel;
- the final softmax is fused with the loss and its gradient (``softmax_head``), so the
  softmax is not computed separately in training (``forward`` still computes it);
- backward: activation gradient with the next dropout's mask folded in; col2im as a gather;
- update: ``w -= lr * g`` in one kernel per tensor.

Arrays stay on the device: ``to_device`` copies a host batch once (in its host dtype) and
converts dtype + NCHW -> NHWC in one device copy; ``train_step`` never reads anything back
(the loss stays a 0-d device array). ``sgd_step`` returns ``float(loss)`` per the contract,
which synchronizes.

With ``xp=numpy`` and the ``"numpy"`` (twin) or ``"emulated"`` kernel table this exact
class runs on the CPU, which is how it is tested without a GPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.core.spec import ModelSpec
from implementations.numpy import mlp
from implementations.numpy.model import XpModel

from .kernels import Kernels, make_kernels

ACTIVATIONS = ("sigmoid", "relu", "tanh")


class CupyModel(XpModel):
    """``XpModel`` on CuPy arrays with a kernel table; ``xp=numpy`` runs it on the CPU."""

    backend = "cupy"

    def __init__(
        self, spec: ModelSpec, params: dict, dtype: str, xp: Any = None, kernels: Kernels | None = None, seed: int = 0
    ):
        if xp is None:
            import cupy as xp
        super().__init__(spec, params, dtype, xp=xp, seed=seed)
        self.k = kernels if kernels is not None else make_kernels("numpy" if xp is np else "cuda", dtype)
        types = [layer.type for layer in self.layers] + [None]
        # act_after[i]: activation fused into the bias add of dense/conv layer i.
        self.act_after = [
            types[i + 1] if t in ("dense", "conv2d") and types[i + 1] in ACTIVATIONS else None
            for i, t in enumerate(types[:-1])
        ]
        # drop_after[i]: the dropout mask multiply of layer i + 1 is folded into activation i's backward.
        self.drop_after = [t in ACTIVATIONS and types[i + 1] == "dropout" for i, t in enumerate(types[:-1])]

    # ------------------------------------------------------------------ conversions
    def _to_internal(self, x):
        """One host -> device copy in the host dtype, then cast (+ NCHW -> NHWC) on the device."""
        xp = self.xp
        a = xp.asarray(x)
        if a.ndim != 4:
            return a.astype(self.dtype, copy=False)
        n, c, h, w = a.shape
        out = xp.empty((n, h, w, c), dtype=self.dtype)
        out[...] = a.transpose(0, 2, 3, 1)  # cast and transpose in one copy kernel
        return out

    def sync(self) -> None:
        if self.xp is not np:
            self.xp.cuda.get_current_stream().synchronize()

    # ------------------------------------------------------------------ forward
    def _linear(self, i: int, x):
        """GEMM of dense/conv layer ``i`` without its bias: (z (rows, out), cache, out shape)."""
        layer, w = self.layers[i], self.w[f"{i}.W"]
        if layer.type == "dense":
            return x @ w, x, None  # (N, in) @ (in, out)
        cols, (n, ho, wo) = self.k.im2col(x, layer.kernel, layer.padding)  # (N*Ho*Wo, k*k*C)
        return cols @ w.T, (cols, x.shape), (n, ho, wo, w.shape[0])

    def _forward(self, x, train: bool, collect: list | None = None, head: bool = True):
        """Every layer in order; ``caches[i]`` as the reference's. ``head=False`` stops at the
        logits of a final softmax (the training step's loss head computes it). ``collect``
        receives every layer's output (internal layout)."""
        n_layers, caches, logits, i = len(self.layers), [None] * len(self.layers), None, 0
        while i < n_layers:
            layer, kind = self.layers[i], self.layers[i].type
            if kind in ("dense", "conv2d"):
                z, caches[i], shape = self._linear(i, x)
                b, act = self.w[f"{i}.b"], self.act_after[i]
                if act is None or collect is not None:
                    x = z + b if shape is None else (z + b).reshape(shape)
                if act is not None:
                    if collect is not None:
                        collect.append(x)
                    y = self.k.bias_act(act, z, b)
                    x = caches[i + 1] = y if shape is None else y.reshape(shape)
                    i += 1
            elif kind == "maxpool2d":
                shape = x.shape
                x, arg = self.k.maxpool_forward(x)
                caches[i] = (arg, shape)
            elif kind == "flatten":
                caches[i] = x.shape
                x = (x.transpose(0, 3, 1, 2) if x.ndim == 4 else x).reshape(x.shape[0], -1)  # NHWC -> NCHW order
            elif kind == "dropout":
                if train and layer.rate > 0:
                    u = self.rng.random(x.shape, dtype=x.dtype)  # the reference's draw, same order
                    x, caches[i] = self.k.dropout(x, u, layer.rate)
            elif kind == "softmax":
                logits = x
                if head or i < n_layers - 1:
                    x = mlp.softmax(x)
            else:
                x = caches[i] = mlp.activation_forward(kind, x)
            if collect is not None:
                collect.append(x)
            i += 1
        return x, caches, logits

    # ------------------------------------------------------------------ backward
    def _backward(self, caches, out, dy, last_done: bool) -> dict[str, Any]:
        grads: dict[str, Any] = {}
        top = len(self.layers) - 1
        for i in range(top, self.first_param - 1, -1):  # nothing below the first parameter layer
            if i == top and last_done:
                continue
            cache, kind = caches[i], self.layers[i].type
            if kind == "dense":
                dy, grads[f"{i}.W"], grads[f"{i}.b"] = mlp.dense_backward(
                    cache, self.w[f"{i}.W"], dy, i > self.first_param
                )
            elif kind == "conv2d":
                dy = self._conv_backward(i, cache, dy, grads)
            elif kind == "maxpool2d":
                dy = self.k.maxpool_backward(cache[0], cache[1], dy)
            elif kind == "flatten":
                if len(cache) == 4:
                    n, h, w, c = cache
                    dy = dy.reshape(n, c, h, w).transpose(0, 2, 3, 1)
                else:
                    dy = dy.reshape(cache)
            elif kind == "dropout":
                if cache is not None and not (i > 0 and self.drop_after[i - 1]):
                    dy = dy * cache
            elif kind == "softmax":
                dy = mlp.softmax_backward(out, dy)
            else:
                mask = caches[i + 1] if self.drop_after[i] else None
                dy = self.k.act_backward(kind, cache, dy, mask)
        return grads

    def _conv_backward(self, i: int, cache, dy, grads: dict):
        """dy (N, Ho, Wo, O) -> dx (N, H, W, C) or None; stores dW (O, k*k*C) and db (O,)."""
        layer, wm = self.layers[i], self.w[f"{i}.W"]
        cols, x_shape = cache
        dy2 = dy.reshape(-1, dy.shape[-1])  # (N*Ho*Wo, O)
        grads[f"{i}.W"] = dy2.T @ cols
        grads[f"{i}.b"] = dy2.sum(axis=0)
        return self.k.col2im(dy2 @ wm, x_shape, layer.kernel, layer.padding) if i > self.first_param else None

    # ------------------------------------------------------------------ step
    def _step(self, x, y, train: bool, lr: float | None):
        """Forward, fused loss head, backward, fused SGD. The loss stays on the device."""
        fused_head = self.layers[-1].type == "softmax"
        out, caches, logits = self._forward(x, train, head=not fused_head)
        if fused_head:
            loss, out, dy = self.k.softmax_head(self.spec.loss, logits, y)
        else:
            loss, dy, _ = self._loss(out, logits, y)
        grads = self._backward(caches, out, dy, fused_head)
        if lr is not None:
            for name, g in grads.items():
                self.k.sgd(self.w[name], g, lr)
        return loss, grads

    def activations(self, x: np.ndarray) -> list[np.ndarray]:
        acts: list = []
        self._forward(self._to_internal(x), train=False, collect=acts)
        return [self._canonical_act(a) for a in acts]
