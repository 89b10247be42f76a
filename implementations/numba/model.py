"""The network with Numba kernels between NumPy-BLAS GEMMs (see ``kernels``).

Internal layouts as in the NumPy reference: images NHWC (converted at the input and at
``flatten``), conv W ``(O, kh*kw*C)``, dense W ``(in, out)``. Fusions: a dense/conv layer
followed by sigmoid/relu/tanh applies bias + activation in one pass forward, and the
activation gradient + bias gradient in one pass backward; dropout draws and applies its
mask in one pass; softmax is fused with cross-entropy. Gradients are computed for every
layer, then applied in place (plain SGD, or Adam through the shared
``implementations.optim.Adam``, NumPy ops on the same arrays).

Threads: at one thread every kernel is its serial twin. At T > 1 a batch whose shards would
each do enough work (``shards.split``) runs as T shards, one per thread (``shards.ShardPool``):
each shard's forward and backward with its own buffers (``Workspace``), the loss and its
gradient scaled by the whole batch's size, dropout drawing the shard's rows of the batch's
masks (so a sharded step computes what the unsharded one does, sums reordered); the shards'
gradients are then summed and applied here. Smaller batches run whole on T-thread kernels.
"""

from __future__ import annotations

import contextlib
from typing import Any, NamedTuple

import numpy as np

from bench.core.model import Model, check_supported
from bench.core.params import check_params
from bench.core.spec import ModelSpec
from bench.core.threads import configured_threads
from implementations import shards
from implementations.optim import make_adam

from . import blas, conv_pool
from . import kernels as K

DEFAULT_THREADING_LAYER = "workqueue"

# At T > 1 threads a batch runs as T shards when each shard performs at least this many FLOPs
# per parameter (``shards.split``). Measured at 2 threads (unpinned, alternated with the
# unsharded step, 2026-12-04, a Zen 4 EPYC): the mlp (5.0 FLOP per parameter and sample) lost
# at batch 50 (25-row shards, 125 FLOP/param: 5.9-6.1 against 4.5-5.5 ms) and won from batch 96
# (48 rows, 240: 7.0 against 8.8 ms; batch 256 11.7-12.1 against 15.3-18.7 ms); the cnn (142 per
# sample) wins at batch 50 (17.2-17.7 against 23.7-26.9 ms).
SHARD_MIN_FLOPS = 200.0


def set_threads() -> int:
    """Numba's thread count from the harness setting (capped by the pool size fixed at
    import from NUMBA_NUM_THREADS).

    Unless ``NUMBA_THREADING_LAYER`` is set, the threading layer is Numba's own
    ``workqueue``, chosen before the pool starts: with the default GNU OpenMP layer the
    idle workers spin between parallel regions and fight NumPy's BLAS threads for the
    cores (measured: the MLP step 5-10x slower at 2 threads on a busy 2-core machine,
    while ``workqueue`` or ``OMP_WAIT_POLICY=passive`` were not)."""
    import os

    import numba

    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = DEFAULT_THREADING_LAYER
    n = max(1, min(configured_threads(), numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n)
    return n


def _shard_thread() -> None:
    """A shard thread's setup: serial kernels only (``kernels.by_threads``; the ``workqueue``
    layer may not be entered from two threads at once), and Numba at one thread there, so a
    parallel kernel reached by mistake would still not start a team."""
    import numba

    numba.set_num_threads(1)
    K.serial_thread()


class NumbaModel(Model):
    def __init__(self, spec: ModelSpec, params: dict, dtype: str, seed: int = 0):
        check_supported("numba", spec, dtype)
        check_params(spec, params)
        self.spec, self.dtype, self.layers = spec, dtype, spec.layers
        self.in_shapes = spec.input_shapes()
        self.lr = np.dtype(dtype).type(spec.train.lr)
        self.w: dict[str, np.ndarray] = {}
        for name, value in params.items():
            a = np.array(value, dtype=dtype)  # a copy: the caller's params are never updated
            if a.ndim == 4:  # (O, C, kh, kw) -> (O, kh*kw*C)
                a = a.transpose(0, 2, 3, 1).reshape(a.shape[0], -1)
            self.w[name] = np.ascontiguousarray(a)
        self.need_dx = [i > spec.first_param_layer for i in range(len(self.layers))]
        self.threads = set_threads()
        self.key = seed << 32  # dropout counter: each mask draws from a fresh key
        self.dropouts = sum(1 for layer in self.layers if layer.type == "dropout" and layer.rate > 0)
        self.adam = make_adam(spec.train)  # None: plain SGD
        # plain SGD on one shard: each dense layer's update fused with its weight gradient (``blas``)
        self.fused_update = self.adam is None and blas.FUSED is not None
        # buffers reused across steps, one set per shard (``shards``: one shard per thread)
        self.workspaces = [conv_pool.Workspace() for _ in range(self.threads)]
        self.shard_pool = shards.pool("numba", self.threads, _shard_thread, K.serial_here) if self.threads > 1 else None
        self.update_shares = shards.balance({k: v.size for k, v in self.w.items()}, self.threads)
        self.flops_per_param = shards.flops_per_param(spec)

    def flops(self, batch: int) -> dict[str, int]:
        """What each phase performs: the Winograd blocks' GEMMs and transforms, not direct
        convolutions (``conv_pool.performed_flops``)."""
        return conv_pool.performed_flops(self, batch)

    # ------------------------------------------------------------------ forward
    def _param_forward(self, i: int, x, code: int):
        """dense/conv layer i with activation ``code`` fused: (output, cache)."""
        layer, b = self.layers[i], self.w[f"{i}.b"]
        if layer.type == "dense":
            y = x @ self.w[f"{i}.W"]  # (N, out)
            K.bias_act(y, b, code)
            return y, x
        n, h, w, c = x.shape
        k, p = layer.kernel, (layer.kernel // 2 if layer.padding == "same" else 0)
        ho, wo = h + 2 * p - k + 1, w + 2 * p - k + 1
        cols = np.empty((n * ho * wo, k * k * c), dtype=x.dtype)
        K.im2col(x, k, p, cols)
        y = cols @ self.w[f"{i}.W"].T  # (N*Ho*Wo, O): already NHWC
        K.bias_act(y, b, code)
        return y.reshape(n, ho, wo, -1), (cols, x.shape)

    def _forward(self, x, train: bool, fuse: bool = True, record: list | None = None, shard=None):
        """Run every layer: (output, caches, logits of a final softmax). ``shard``: a
        ``Shard`` (its workspace, its dropout keys and first row); None: the whole batch."""
        shard = shard or Shard(self.workspaces[0], self._dropout_keys(train), 0)
        caches: list[Any] = [None] * len(self.layers)
        logits, i, drop = None, 0, 0
        while i < len(self.layers):
            layer, kind = self.layers[i], self.layers[i].type
            if fuse and conv_pool.fusable(self.layers, i):  # conv + relu + pool in one block
                x, caches[i + 2] = conv_pool.forward(self, i, x, shard.ws)
                i += 3
                continue
            nxt = self.layers[i + 1].type if i + 1 < len(self.layers) else None
            if kind in ("dense", "conv2d"):
                code = K.ACT_CODES.get(nxt, K.NONE) if fuse else K.NONE
                x, caches[i] = self._param_forward(i, x, code)
                if code != K.NONE:  # the activation layer is done too; it caches its output
                    i += 1
                    caches[i] = x
            elif kind == "maxpool2d":
                x, arg = K.maxpool_forward(x)
                caches[i] = arg
            elif kind == "flatten":
                if x.ndim == 4:  # NHWC -> NCHW feature order
                    x = x.transpose(0, 3, 1, 2)
                x = np.ascontiguousarray(x).reshape(x.shape[0], -1)
            elif kind == "dropout":
                if train and layer.rate > 0:
                    x, caches[i] = K.dropout_forward(x, layer.rate, shard.key0 + drop, shard.first_row)
                    drop += 1
            elif kind == "softmax":
                logits = x
                x = K.softmax(x)
            else:
                x = K.act_forward(x, K.ACT_CODES[kind])
                caches[i] = x
            if record is not None:
                record.append(x)
            i += 1
        return x, caches, logits

    # ------------------------------------------------------------------ backward
    def _param_backward(self, i: int, cache, dy, code: int, act_out, grads: dict, lr=None):
        """dense/conv layer i, with the gradient of the activation above it fused. ``lr``: a dense
        layer's SGD update is applied here, fused with its weight gradient (``_dense_update``),
        and its gradients are not returned."""
        layer, wname = self.layers[i], f"{i}.W"
        dy2 = dy.reshape(-1, dy.shape[-1])  # (M, O)
        act2 = dy2 if act_out is None else act_out.reshape(dy2.shape)
        dz = np.empty_like(dy2)
        db = np.empty(dy2.shape[1], dtype=dy2.dtype)
        K.act_grad_bias(act2, dy2, code, dz, db)
        w = self.w[wname]
        if layer.type == "dense":
            dx = dz @ w.T if self.need_dx[i] else None  # (N, in): before an update changes W
            if lr is None:
                grads[f"{i}.b"], grads[wname] = db, cache.T @ dz
            else:
                self._dense_update(i, cache, dz, db, lr)
            return dx
        grads[f"{i}.b"] = db
        cols, shape = cache
        grads[wname] = dz.T @ cols  # (O, k*k*C)
        if not self.need_dx[i]:
            return None
        k, p = layer.kernel, (layer.kernel // 2 if layer.padding == "same" else 0)
        return K.col2im(dz @ w, *shape, k, p)

    def _dense_update(self, i: int, x, dz, db, lr) -> None:
        """``W -= lr * x^T dz`` as one GEMM accumulating into W (``blas``: no dW array, no
        separate SGD pass over it), ``b -= lr * db``."""
        blas.accumulate_at_b(self.w[f"{i}.W"], np.ascontiguousarray(x), dz, -float(lr))  # (in, out)
        with K.serial_here():  # as the step's other updates (``_step_here``)
            K.sgd(self.w[f"{i}.b"], db, lr)

    def _backward(self, caches, out, dy, top: int, ws: conv_pool.Workspace, lr=None) -> dict:
        """Gradients by name; ``lr``: the dense layers' SGD updates are fused in (``_param_backward``)."""
        grads: dict[str, Any] = {}
        i = top
        while i >= 0:
            kind = self.layers[i].type
            if isinstance(caches[i], conv_pool.Cache):  # the fused conv + relu + pool block
                dy = conv_pool.backward(self, i - 2, caches[i], dy, grads, ws)
                i -= 3
                continue
            if kind in ACTS and i > 0 and self.layers[i - 1].has_params:  # fused into the param layer
                dy = self._param_backward(i - 1, caches[i - 1], dy, K.ACT_CODES[kind], caches[i], grads, lr)
                i -= 2
                continue
            if kind in ("dense", "conv2d"):
                dy = self._param_backward(i, caches[i], dy, K.NONE, None, grads, lr)
            elif not self.need_dx[i]:
                dy = None
            elif kind == "maxpool2d":
                _, h, w = self.in_shapes[i]
                dy = K.maxpool_backward(caches[i], np.ascontiguousarray(dy), h, w)
            elif kind == "flatten":
                c, *hw = self.in_shapes[i]
                if hw:
                    dy = np.ascontiguousarray(dy.reshape(-1, c, *hw).transpose(0, 2, 3, 1))
            elif kind == "dropout":
                if caches[i] is not None:
                    dy = dy * caches[i]
            elif kind == "softmax":
                dy = K.softmax_backward(out, dy)
            else:
                dy = K.act_backward(caches[i], dy, K.ACT_CODES[kind])
            i -= 1
        return grads

    def _dropout_keys(self, train: bool) -> int:
        """The first of this pass's dropout keys (one per dropout layer, in order)."""
        key0 = self.key + 1
        if train:
            self.key += self.dropouts
        return key0

    def _pass(self, x, y, train: bool, shard: Shard, total_n: int, lr=None):
        """Forward and backward of these rows of a batch of ``total_n``: (loss term, grads),
        both the shard's part of the batch's mean (the shards' sum is the batch's). ``lr``: the
        dense layers are updated in the backward (their gradients are not in grads)."""
        out, caches, logits = self._forward(x, train, shard=shard)
        top = len(self.layers) - 1
        if self.spec.loss == "cross_entropy":
            loss, dy = K.cross_entropy_from_logits(logits, y, total_n)
            top -= 1
        else:
            loss, dy = K.mse(out, y, total_n)
        return loss, self._backward(caches, out, dy, top, shard.ws, lr)

    def _sharded(self, n: int, train: bool) -> list[tuple[tuple[int, int], Shard]]:
        """[((s0, s1), Shard)]: the batch's shards (``shards.split``), each with its workspace,
        all with the same dropout keys (a shard draws its rows of the batch's masks)."""
        key0 = self._dropout_keys(train)
        parts = shards.split(n, self.threads, self.flops_per_param, SHARD_MIN_FLOPS)
        return [((s0, s1), Shard(self.workspaces[t], key0, s0)) for t, (s0, s1) in enumerate(parts)]

    def _one_thread(self):
        """At one thread the step's kernels are the serial twins (``kernels.serial_here``)."""
        return K.serial_here() if self.threads == 1 else contextlib.nullcontext()

    def _step(self, x, y, train: bool, lr):
        with self._one_thread():
            return self._step_here(x, y, train, lr)

    def _step_here(self, x, y, train: bool, lr):
        parts = self._sharded(len(x), train)
        if len(parts) == 1:
            fused = lr if lr is not None and self.fused_update else None  # dense updates in the backward
            loss, grads = self._pass(x, y, train, parts[0][1], len(x), fused)
            # serial: a parallel launch costs more than the cnn's whole update (its 325k float32
            # parameters at 2 threads: 0.39 ms with sgd_par where it applies, 0.055 ms serial)
            with K.serial_here():
                for name, g in grads.items():
                    self._sgd(name, g, lr)
            return loss, grads

        def run(t: int):
            (s0, s1), shard = parts[t]
            return self._pass(x[s0:s1], y[s0:s1], train, shard, len(x))

        def combine(t: int, results: list) -> None:  # the update on every core, no second handoff
            shards.sum_and_apply(results, self.update_shares[t], lambda name, g: self._sgd(name, g, lr))

        results = self.shard_pool.map(run, len(parts), combine)
        return sum(loss for loss, _ in results), results[0][1]

    def _sgd(self, name: str, g, lr) -> None:
        if lr is not None:
            K.sgd(self.w[name], np.ascontiguousarray(g), lr)

    # ------------------------------------------------------------------ conversions
    def _canonical(self, name: str, a: np.ndarray) -> np.ndarray:
        i = int(name.split(".")[0])
        if name.endswith(".W") and self.layers[i].type == "conv2d":
            c, k = self.in_shapes[i][0], self.layers[i].kernel
            a = a.reshape(a.shape[0], k, k, c).transpose(0, 3, 1, 2)
        return np.ascontiguousarray(a)

    # ------------------------------------------------------------------ contract
    def to_device(self, x: np.ndarray) -> np.ndarray:
        a = np.asarray(x, dtype=self.dtype)
        return np.ascontiguousarray(a.transpose(0, 2, 3, 1) if a.ndim == 4 else a)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.device_forward(self.to_device(x))

    def device_forward(self, x: np.ndarray) -> np.ndarray:
        parts = self._sharded(len(x), False)
        if len(parts) == 1:
            with self._one_thread():
                return self._forward(x, False, shard=parts[0][1])[0]

        def run(t: int):
            (s0, s1), shard = parts[t]
            return self._forward(x[s0:s1], False, shard=shard)[0]

        return np.concatenate(self.shard_pool.map(run, len(parts)))

    def device_loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        return self._step(x, y, False, None)  # gradients in the internal layout

    def activations(self, x: np.ndarray) -> list[np.ndarray]:
        record: list = []
        self._forward(self.to_device(x), False, fuse=False, record=record)
        return [np.ascontiguousarray(a.transpose(0, 3, 1, 2)) if a.ndim == 4 else a.copy() for a in record]

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        loss, grads = self.device_loss_and_grads(self.to_device(x), self.to_device(y))
        return float(loss), {k: self._canonical(k, g) for k, g in sorted(grads.items())}

    def sgd_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        loss, _ = self._step(self.to_device(x), self.to_device(y), False, np.dtype(self.dtype).type(lr))
        return float(loss)

    def params(self) -> dict[str, np.ndarray]:
        return {k: self._canonical(k, v.copy()) for k, v in sorted(self.w.items())}  # not views of live weights

    def optimizer_step(self, x: np.ndarray, y: np.ndarray) -> float:
        if self.adam is None:
            return self.sgd_step(x, y, self.spec.train.lr)
        loss, grads = self._step(self.to_device(x), self.to_device(y), False, None)
        self.adam.update(self.w, grads)
        return float(loss)

    def on_each_thread(self, fn) -> None:
        """fn() on each Python thread this model computes on (``bench layers`` profiles each)."""
        shards.on_each_thread(self.shard_pool, fn)

    def train_step(self, x, y) -> None:
        if self.adam is None:
            self._step(x, y, True, self.lr)
        else:
            _, grads = self._step(x, y, True, None)
            self.adam.update(self.w, grads)


ACTS = tuple(K.ACT_CODES)


class Shard(NamedTuple):
    """One shard's pass: its buffers, the pass's first dropout key, its first row in the batch."""

    ws: conv_pool.Workspace
    key0: int
    first_row: int
