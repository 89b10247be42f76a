"""Keras 3 (TensorFlow backend) network: a ``keras.Sequential`` built from the spec.

Layouts (converted only at the model's edges):
- images go in channels-last ``(N, H, W, C)``; ``activations`` hands them back NCHW;
- conv W ``(O, I, kh, kw)`` <-> Keras ``(kh, kw, I, O)`` (``conv_w_to_hwio``/``from_hwio``);
- dense W is ``(in, out)`` in both;
- the dense right after ``Flatten`` of a ``(H, W, C)`` tensor sees features in NHWC order,
  while the canonical weights expect NCHW order: its weight rows are permuted on the way in
  (``W_keras = W[perm]``) and its weight/gradient rows permuted back on the way out
  (``W = W_keras[argsort(perm)]``), ``perm`` from ``nchw_to_nhwc_rows``.

Losses: ``keras.losses.MeanSquaredError`` (mean over the last axis, then over the batch =
mean over every element) and ``CategoricalCrossentropy`` on the softmax output. Keras'
TensorFlow backend recognises a tensor produced by its softmax (``_keras_logits`` / the
``Softmax`` op) and computes the loss from the logits with ``log_softmax``, so the 1e-7
probability clipping never applies to our models: softmax and cross-entropy are fused.

float64: every layer, the loss and the optimizer are built under ``floatx = float64`` (the
optimizer's learning-rate variable takes floatx; a float32 ``0.1`` would be off by 1.5e-9).

Adam: ``keras.optimizers.Adam`` computes ``beta ** t`` from ``ops.cast(self.beta_1, dtype)``,
and Keras converts a Python float to a float32 tensor before that cast: with the default
Python-float betas a float64 model's step size ``lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)``
uses 0.8999999761581421 and 0.9990000128746033, and its first step is 6.7e-6 (relative) off
the spec's formula (measured: a constant ratio 0.99999332 on every element; the moments are
exact). Passing the betas and epsilon as NumPy scalars of the model's dtype makes the cast
exact (the same check then gives 0.0 over 3 steps), so the built-in optimizer is kept.

Dropout layers get seeds derived from the ``seed`` given at build (``seed * 1000 + layer``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from bench.core.model import Model, check_supported, conv_w_from_hwio, conv_w_to_hwio, nchw_to_nhwc_rows
from bench.core.params import check_params
from bench.core.spec import ModelSpec

from .setup import keras_tf

LAYERS = ("conv2d", "maxpool2d", "flatten", "dense", "sigmoid", "relu", "tanh", "softmax", "dropout")

# The train_step variants; ``DEFAULT_TRAIN_STEP`` is the fastest one measured on the
# presets (see bench/measure/probe/plain/keras_step.py, which times them all).
TRAIN_STEPS = ("train_on_batch", "train_on_batch_xla", "tf_function", "tf_function_xla")
DEFAULT_TRAIN_STEP = "tf_function"


@contextlib.contextmanager
def floatx(dtype: str) -> Iterator[None]:
    keras = keras_tf()[1]
    old = keras.config.floatx()
    keras.config.set_floatx(dtype)
    try:
        yield
    finally:
        keras.config.set_floatx(old)


def build_sequential(spec: ModelSpec, dtype: str, seed: int = 0) -> Any:
    """One Keras layer per spec layer (``model.layers[i]`` is spec layer ``i``)."""
    keras = keras_tf()[1]
    L = keras.layers
    c, h, w = spec.input_shape
    layers: list[Any] = [keras.Input(shape=(h, w, c), dtype=dtype)]
    for i, layer in enumerate(spec.layers):
        kind = layer.type
        if kind == "conv2d":
            layers.append(L.Conv2D(layer.filters, layer.kernel, padding=layer.padding, dtype=dtype))
        elif kind == "maxpool2d":
            layers.append(L.MaxPooling2D(2, dtype=dtype))  # valid padding: floors like the reference
        elif kind == "flatten":
            layers.append(L.Flatten(dtype=dtype))  # NHWC order: see the module docstring
        elif kind == "dense":
            layers.append(L.Dense(layer.units, dtype=dtype))
        elif kind == "dropout":
            layers.append(L.Dropout(layer.rate, seed=seed * 1000 + i, dtype=dtype))
        else:
            layers.append(L.Activation(kind, dtype=dtype))
    return keras.Sequential(layers, name=spec.name.replace("-", "_"))


class KerasModel(Model):
    backend = "keras"

    def __init__(self, spec: ModelSpec, params: dict, dtype: str, train_step: str = DEFAULT_TRAIN_STEP, seed: int = 0):
        check_supported(self.backend, spec, dtype, layers=LAYERS)
        check_params(spec, params)
        if train_step not in TRAIN_STEPS:
            raise ValueError(f"train_step must be one of {TRAIN_STEPS}, got {train_step!r}")
        self.tf, self.keras = keras_tf()
        self.spec, self.dtype, self.train_step_kind = spec, dtype, train_step
        self.perms = {i: nchw_to_nhwc_rows(spec, i) for i, la in enumerate(spec.layers) if la.type == "dense"}
        with floatx(dtype):
            self.model = build_sequential(spec, dtype, seed)
            self.loss_fn = self._make_loss()
            self.sgd = self.keras.optimizers.SGD(learning_rate=spec.train.lr)
            self.spec_opt = self._make_optimizer()  # optimizer_step's own state
            self._load(params)
            self._build_train_step()
            self._build_graph_fns()
        # Trainable variables in canonical order: kernel, bias of each param layer.
        self.vars = [
            v for i, _ in self._param_layers() for v in (self.model.layers[i].kernel, self.model.layers[i].bias)
        ]

    def _make_loss(self) -> Any:
        losses = self.keras.losses
        if self.spec.loss == "cross_entropy":
            return losses.CategoricalCrossentropy(dtype=self.dtype)
        return losses.MeanSquaredError(dtype=self.dtype)

    def _make_optimizer(self) -> Any:
        """The spec's optimizer; Adam's hyperparameters as scalars of the model's dtype (see
        the module docstring)."""
        tr, opts = self.spec.train, self.keras.optimizers
        if tr.optimizer == "sgd":
            return opts.SGD(learning_rate=tr.lr)
        t = np.dtype(self.dtype).type
        return opts.Adam(learning_rate=tr.lr, beta_1=t(tr.beta_1), beta_2=t(tr.beta_2), epsilon=t(tr.epsilon))

    # ------------------------------------------------------------------ parameters
    def _param_layers(self) -> list[tuple[int, Any]]:
        return [(i, la) for i, la in enumerate(self.spec.layers) if la.has_params]

    def _load(self, params: dict) -> None:
        for i, la in self._param_layers():
            w = np.asarray(params[f"{i}.W"], dtype=np.float64)
            if la.type == "conv2d":
                w = conv_w_to_hwio(w)  # (O, I, kh, kw) -> (kh, kw, I, O)
            elif self.perms[i] is not None:
                w = w[self.perms[i]]  # rows NCHW feature order -> NHWC (what Flatten yields)
            kl = self.model.layers[i]
            assert tuple(kl.kernel.shape) == w.shape, (i, tuple(kl.kernel.shape), w.shape)
            kl.kernel.assign(w.astype(self.dtype))
            kl.bias.assign(np.asarray(params[f"{i}.b"], dtype=self.dtype))

    def _canonical(self, i: int, kind: str, a: np.ndarray) -> np.ndarray:
        """A kernel/bias (or its gradient) of layer i -> canonical layout."""
        if kind == "W":
            if self.spec.layers[i].type == "conv2d":
                return conv_w_from_hwio(a)  # (kh, kw, I, O) -> (O, I, kh, kw)
            if self.perms[i] is not None:
                return np.ascontiguousarray(a[np.argsort(self.perms[i])])  # NHWC rows -> NCHW rows
        return np.ascontiguousarray(a)

    def _named(self, arrays: list[Any]) -> dict[str, np.ndarray]:
        out, it = {}, iter(arrays)
        for i, _ in self._param_layers():
            out[f"{i}.W"] = self._canonical(i, "W", np.asarray(next(it)))
            out[f"{i}.b"] = self._canonical(i, "b", np.asarray(next(it)))
        return out

    # ------------------------------------------------------------------ train_step variants
    def _build_train_step(self) -> None:
        """``train_on_batch*``: ``model.compile`` + ``train_on_batch`` (Keras' own loop);
        ``tf_function*``: a ``tf.function`` with GradientTape + ``optimizer.apply``.
        ``*_xla`` compiles the step with XLA (``jit_compile=True``)."""
        tf = self.tf
        xla = self.train_step_kind.endswith("_xla")
        opt = self._make_optimizer()
        if self.train_step_kind.startswith("train_on_batch"):
            self.model.compile(optimizer=opt, loss=self._make_loss(), jit_compile=xla)
            self._train = self.model.train_on_batch
            return
        model, loss_fn = self.model, self._make_loss()

        def step(x: Any, y: Any) -> None:
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=True))
            opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)

        self._train = tf.function(step, jit_compile=xla)

    def _build_graph_fns(self) -> None:
        """``forward`` and the loss/gradient computation as ``tf.function`` graphs, like the
        train step: eager Keras would time Python dispatch (at batch 1, 7.4 ms eager against
        2.1 ms for the whole graph train step), not the framework. One trace per input shape;
        the harness's untimed warm-up calls absorb it."""
        tf, model, loss_fn = self.tf, self.model, self.loss_fn

        def fwd(x: Any) -> Any:
            return model(x, training=False)

        def loss_grads(x: Any, y: Any) -> tuple[Any, list[Any]]:
            with tf.GradientTape() as tape:
                loss = loss_fn(y, model(x, training=False))
            return loss, tape.gradient(loss, self.vars)  # traced at the first call: self.vars exists

        self._fwd = tf.function(fwd)
        self._loss_grads_graph = tf.function(loss_grads)

    # ------------------------------------------------------------------ contract
    def to_device(self, x: np.ndarray) -> Any:
        """Host batch -> TF tensor in ``dtype``; images NCHW -> NHWC."""
        a = np.asarray(x, dtype=self.dtype)
        if a.ndim == 4:
            a = a.transpose(0, 2, 3, 1)
        return self.tf.constant(np.ascontiguousarray(a))

    def train_step(self, x: Any, y: Any) -> None:
        self._train(x, y)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.device_forward(self.to_device(x)))

    def device_forward(self, x: Any) -> Any:
        return self._fwd(x)  # the tf.function graph; a TF tensor

    def device_loss_and_grads(self, x: Any, y: Any) -> tuple[Any, list[Any]]:
        return self._loss_grads_graph(x, y)  # TF tensors, Keras layouts (HWIO kernels)

    def activations(self, x: np.ndarray) -> list[np.ndarray]:
        """Every layer's output in canonical layout: 4-D NHWC -> NCHW, and the flattened
        features from ``flatten`` up to the next dense put back in NCHW order."""
        h, outs, unperm = self.to_device(x), [], None
        for layer, spec_layer in zip(self.model.layers, self.spec.layers, strict=True):
            if spec_layer.type == "flatten" and len(h.shape) == 4:
                _, hh, ww, cc = h.shape
                unperm = np.argsort(np.arange(cc * hh * ww).reshape(cc, hh, ww).transpose(1, 2, 0).reshape(-1))
            elif spec_layer.type == "dense":
                unperm = None
            h = layer(h, training=False)
            a = np.asarray(h)
            if a.ndim == 4:
                a = a.transpose(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
            elif unperm is not None:
                a = a[:, unperm]  # NHWC feature order -> NCHW
            outs.append(np.ascontiguousarray(a))
        return outs

    def _loss_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[Any, list[Any]]:
        return self.device_loss_and_grads(self.to_device(x), self.to_device(y))

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        loss, grads = self._loss_grads(x, y)
        return float(loss), self._named(grads)

    def sgd_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        loss, grads = self._loss_grads(x, y)
        self.sgd.learning_rate = lr  # assigns the optimizer's lr variable (float64 for float64 models)
        self.sgd.apply(grads, self.vars)
        return float(loss)

    def optimizer_step(self, x: np.ndarray, y: np.ndarray) -> float:
        if self.spec.train.optimizer == "sgd":
            return self.sgd_step(x, y, self.spec.train.lr)
        loss, grads = self._loss_grads(x, y)
        self.spec_opt.apply(grads, self.vars)
        return float(loss)

    def params(self) -> dict[str, np.ndarray]:
        return self._named([v.numpy() for v in self.vars])
