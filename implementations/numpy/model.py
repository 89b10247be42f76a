"""The reference network: a spec's layers run in order with NumPy (or CuPy) arrays.

Internal layouts: images NHWC (converted at the input and at ``flatten``), conv weights
in GEMM layout ``(O, kh*kw*C)``; dense weights are canonical ``(in, out)``. Parameters
and gradients are converted back to canonical layouts only in ``params()`` and
``loss_and_grads()``; ``train_step`` updates the internal arrays in place. The final
softmax is fused with cross-entropy (gradient ``(p - y) / N`` from the logits); with MSE
it back-propagates through the softmax Jacobian.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bench.core.model import Model, check_supported, to_host
from bench.core.params import check_params
from bench.core.spec import ModelSpec
from bench.core.threads import configured_threads
from implementations import shards
from implementations.optim import make_adam

from . import cnn, mlp

# At T > 1 threads a batch runs as T shards when each shard performs at least this many FLOPs
# per parameter (``shards.split``). Measured at 2 threads (unpinned, alternated with the
# unsharded step, 2026-12-04, a Zen 4 EPYC): the cnn (142 FLOP per parameter and sample) gains at
# batch 50 (25-sample shards: 21.3-23.1 against 28.4-30.6 ms) and 256 (133-137 against 206-233);
# the mlp (5.0) does not (batch 96, 240 FLOP/param: 6.9-7.5 against 5.7-6.8 ms; batch 256, 640:
# 12.1-12.5 against 12.4-12.6), its big GEMMs already on both cores through BLAS.
SHARD_MIN_FLOPS = 1000.0


class XpModel(Model):
    """``xp`` is ``numpy`` or ``cupy``; everything else is the same code."""

    backend = "numpy"

    def __init__(
        self, spec: ModelSpec, params: dict, dtype: str, xp: Any = np, seed: int = 0, threads: int | None = None
    ):
        check_supported(self.backend, spec, dtype)
        check_params(spec, params)
        self.spec, self.dtype, self.xp = spec, dtype, xp
        self.layers = spec.layers
        self.in_shapes = spec.input_shapes()
        self.rng = xp.random.default_rng(seed)  # dropout masks
        self.adam = make_adam(spec.train)  # None: plain SGD
        self.w: dict[str, Any] = {}
        for name, value in params.items():
            i = int(name.split(".")[0])
            a = np.array(value, dtype=dtype)  # a copy: the caller's params are never updated
            if name.endswith(".W") and self.layers[i].type == "conv2d":
                a = cnn.conv_weight_in(a)  # (O, C, kh, kw) -> (O, kh*kw*C)
            self.w[name] = xp.asarray(a)
        # the backward pass ends at the first parameter layer: nothing below it has a gradient
        # to receive (the MLP's first dense follows a flatten: its input gradient, a
        # (N, 800) @ (800, 784) GEMM, was 15 % of the NumPy MLP's step at 1 thread)
        self.first_param = spec.first_param_layer
        # NumPy at T > 1 threads: batches with enough work run as T data-parallel shards
        # (``implementations.shards``): NumPy's own ops run on one thread at any thread count,
        # so the shards are what puts them on every core. CuPy (and CuPy's code on NumPy) never.
        self.threads = (threads or configured_threads()) if self.backend == "numpy" and xp is np else 1
        self.shard_pool = shards.pool("numpy", self.threads) if self.threads > 1 else None
        self.flops_per_param = shards.flops_per_param(spec)
        self.update_shares = shards.balance({k: int(v.size) for k, v in self.w.items()}, self.threads)

    # ------------------------------------------------------------------ conversions
    def _to_internal(self, x):
        """Canonical host batch -> internal array: images NCHW -> NHWC, in ``dtype``."""
        xp = self.xp
        x = xp.asarray(x, dtype=self.dtype)
        if x.ndim == 4:
            x = xp.ascontiguousarray(x.transpose(0, 2, 3, 1))
        return x

    def _param_out(self, name: str, a) -> np.ndarray:
        """Internal layout -> canonical host array (the inverse of ``__init__``)."""
        i = int(name.split(".")[0])
        if name.endswith(".W") and self.layers[i].type == "conv2d":
            a = cnn.conv_weight_out(a, self.in_shapes[i][0], self.layers[i].kernel)
        out = a.get() if hasattr(a, "get") else np.array(a)  # a copy, not a view of live weights
        return np.ascontiguousarray(out)

    # ------------------------------------------------------------------ passes
    def _forward(self, x, train: bool, masks: dict | None = None):
        """Run every layer; returns (output, caches, logits). ``caches[i]`` is what layer i's
        backward needs. The last softmax is not applied to ``logits``. ``masks``: dropout
        layer -> its mask for these rows (a shard's), else drawn here."""
        caches: list[Any] = []
        logits = None
        for i, layer in enumerate(self.layers):
            kind, cache = layer.type, None
            fused_pool = i > 0 and isinstance(caches[i - 1], cnn.ReluPoolCache)
            if kind == "dense":
                cache = x
                x = mlp.dense_forward(x, self.w[f"{i}.W"], self.w[f"{i}.b"])
            elif kind == "conv2d":
                shape = x.shape
                x, cols = cnn.conv_forward(x, self.w[f"{i}.W"], self.w[f"{i}.b"], layer.kernel, layer.padding)
                cache = (cols, shape)
            elif kind == "maxpool2d":
                if not fused_pool:  # else relu + pool already ran at the relu (cache None)
                    shape = x.shape
                    x, arg = cnn.maxpool_forward(x)
                    cache = (arg, shape)
            elif kind == "relu" and x.ndim == 4 and self._pool_follows(i):
                x, cache = cnn.relu_pool_forward(x)
            elif kind == "flatten":
                cache = x.shape
                if x.ndim == 4:  # NHWC -> NCHW so features are in canonical order
                    x = x.transpose(0, 3, 1, 2)
                x = x.reshape(x.shape[0], -1)
            elif kind == "dropout":
                if train and layer.rate > 0:
                    cache = masks[i] if masks is not None else mlp.dropout_mask(self.rng, x.shape, layer.rate, x.dtype)
                    x = x * cache
            elif kind == "softmax":
                logits = x
                x = mlp.softmax(x)
            else:
                x = mlp.activation_forward(kind, x)
                cache = x
            caches.append(cache)
        return x, caches, logits

    def _pool_follows(self, i: int) -> bool:
        """Layer i + 1 exists and is a 2x2 max-pool (relu + pool then run fused)."""
        return i + 1 < len(self.layers) and self.layers[i + 1].type == "maxpool2d"

    def _loss(self, out, logits, y):
        """(loss, gradient w.r.t. the input of the last layer when it is a softmax fused
        with CE, else w.r.t. the output) and whether the last layer is already done."""
        if self.spec.loss == "cross_entropy":
            loss, _, dz = mlp.cross_entropy_from_logits(logits, y)
            return loss, dz, True
        loss, dout = mlp.mse_loss(out, y)
        return loss, dout, False

    def _backward(self, caches, out, dy, last_done: bool) -> dict[str, Any]:
        """Gradients in internal layouts. ``dy`` is d loss / d (output of the last layer),
        or of its input when ``last_done``."""
        grads: dict[str, Any] = {}
        top = len(self.layers) - 1
        for i in range(top, self.first_param - 1, -1):
            layer, cache, kind = self.layers[i], caches[i], self.layers[i].type
            if i == top and last_done:
                continue
            need_dx = i > self.first_param
            if kind == "dense":
                dy, grads[f"{i}.W"], grads[f"{i}.b"] = mlp.dense_backward(cache, self.w[f"{i}.W"], dy, need_dx)
            elif kind == "conv2d":
                cols, shape = cache
                dy, grads[f"{i}.W"], grads[f"{i}.b"] = cnn.conv_backward(
                    cols, shape, self.w[f"{i}.W"], dy, layer.kernel, layer.padding, need_dx
                )
            elif kind == "maxpool2d":
                if cache is not None:  # None: fused into the relu below
                    dy = cnn.maxpool_backward(cache[0], cache[1], dy)
            elif isinstance(cache, cnn.ReluPoolCache):
                dy = cnn.relu_pool_backward(cache, dy)
            elif kind == "flatten":
                if len(cache) == 4:
                    n, h, w, c = cache
                    dy = dy.reshape(n, c, h, w).transpose(0, 2, 3, 1)
                else:
                    dy = dy.reshape(cache)
            elif kind == "dropout":
                if cache is not None:
                    dy = dy * cache
            elif kind == "softmax":
                dy = mlp.softmax_backward(out, dy)
            else:
                dy = mlp.activation_backward(kind, cache, dy)
        return grads

    def _step(self, x, y, train: bool, lr: float | None):
        parts = self._shards(len(x))
        if len(parts) > 1:
            return self._sharded_step(x, y, train, lr, parts)
        out, caches, logits = self._forward(x, train)
        loss, dy, done = self._loss(out, logits, y)
        grads = self._backward(caches, out, dy, done)
        for name in grads:
            self._sgd(name, grads[name], lr)
        return loss, grads

    def _sgd(self, name: str, g, lr: float | None) -> None:
        if lr is not None:  # in place, no temporary: g is scaled then subtracted
            g *= lr
            self.w[name] -= g

    def _shards(self, n: int) -> list[tuple[int, int]]:
        if self.shard_pool is None:
            return [(0, n)]
        return shards.split(n, self.threads, self.flops_per_param, SHARD_MIN_FLOPS)

    def _masks(self, n: int) -> dict[int, Any]:
        """The whole batch's dropout masks, drawn in layer order with the whole batch's shapes:
        what the unsharded forward draws (NHWC inside: (C, H, W) -> (H, W, C))."""
        masks = {}
        for i, layer in enumerate(self.layers):
            if layer.type == "dropout" and layer.rate > 0:
                shape = self.in_shapes[i]
                inner = (*shape[1:], shape[0]) if len(shape) == 3 else tuple(shape)
                masks[i] = mlp.dropout_mask(self.rng, (n, *inner), layer.rate, self.dtype)
        return masks

    def _sharded_step(self, x, y, train: bool, lr: float | None, parts: list[tuple[int, int]]):
        """The batch as data-parallel shards, one per thread: each shard's loss and gradient
        are its share of the batch's mean (dy scaled by its rows / N); then each thread sums
        and applies its share of the gradients."""
        n, masks = len(x), (self._masks(len(x)) if train else {})

        def run(t: int):
            s0, s1 = parts[t]
            out, caches, logits = self._forward(x[s0:s1], train, {i: m[s0:s1] for i, m in masks.items()})
            loss, dy, done = self._loss(out, logits, y[s0:s1])
            share = (s1 - s0) / n
            dy *= self.xp.asarray(share, dtype=dy.dtype)  # a fresh array from the loss
            return loss * share, self._backward(caches, out, dy, done)

        def combine(t: int, results: list) -> None:
            shards.sum_and_apply(results, self.update_shares[t], lambda name, g: self._sgd(name, g, lr))

        results = self.shard_pool.map(run, len(parts), combine)
        return sum(loss for loss, _ in results), results[0][1]

    # ------------------------------------------------------------------ contract
    def forward(self, x: np.ndarray) -> np.ndarray:
        return self._host(self.device_forward(self._to_internal(x)))

    def activations(self, x: np.ndarray) -> list[np.ndarray]:
        outs = []
        h = self._to_internal(x)
        for i in range(len(self.layers)):
            sub = XpModelView(self, i + 1)
            h_i, _, _ = sub._forward(h, train=False)
            outs.append(self._canonical_act(h_i))
        return outs

    def _canonical_act(self, a) -> np.ndarray:
        a = self._host(a)
        return np.ascontiguousarray(a.transpose(0, 3, 1, 2)) if a.ndim == 4 else a

    def _host(self, a) -> np.ndarray:
        return to_host(a)

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        loss, grads = self.device_loss_and_grads(self._to_internal(x), self._to_internal(y))
        return float(loss), {k: self._param_out(k, g) for k, g in sorted(grads.items())}

    def sgd_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        loss, _ = self._step(self._to_internal(x), self.xp.asarray(y, dtype=self.dtype), False, lr)
        return float(loss)

    def params(self) -> dict[str, np.ndarray]:
        return {k: self._param_out(k, v) for k, v in sorted(self.w.items())}

    def to_device(self, x: np.ndarray):
        return self._to_internal(x)

    def device_forward(self, x):
        parts = self._shards(len(x))
        if len(parts) == 1:
            return self._forward(x, train=False)[0]  # (N, classes) on xp
        outs = self.shard_pool.map(lambda t: self._forward(x[parts[t][0] : parts[t][1]], False)[0], len(parts))
        return np.concatenate(outs)

    def device_loss_and_grads(self, x, y):
        return self._step(x, y, False, None)  # gradients in the internal layout (HWIO kernels)

    def optimizer_step(self, x: np.ndarray, y: np.ndarray) -> float:
        if self.adam is None:
            return self.sgd_step(x, y, self.spec.train.lr)
        loss, grads = self._step(self._to_internal(x), self.xp.asarray(y, dtype=self.dtype), False, None)
        self.adam.update(self.w, grads)
        return float(loss)

    def on_each_thread(self, fn) -> None:
        """fn() on each Python thread this model computes on (``bench layers`` profiles each)."""
        shards.on_each_thread(self.shard_pool, fn)

    def train_step(self, x, y) -> None:
        if self.adam is None:
            self._step(x, y, True, self.spec.train.lr)
        else:
            _, grads = self._step(x, y, True, None)
            self.adam.update(self.w, grads)


class XpModelView(XpModel):
    """The first ``n`` layers of a model, sharing its weights (for ``activations``)."""

    def __init__(self, base: XpModel, n: int):
        self.__dict__.update(base.__dict__)
        self.layers = base.layers[:n]
