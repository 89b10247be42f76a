"""The implementation contract, and helpers every backend shares.

A backend is a subpackage of ``implementations`` whose ``__init__`` defines, without
importing its framework at module level:

- ``REQUIRES``: tuple of hardware needs (``()`` or ``("gpu",)``), for the harness to
  filter on and say why;
- ``available() -> (ok, reason)``: never raises; the reason is the real one (the
  exception text of a failed import or device query);
- ``build(spec, params, dtype, seed=0) -> Model`` with ``dtype`` ``"float32"`` or
  ``"float64"``; ``seed`` seeds the model's dropout masks (two seeds, two mask streams);
  anything it cannot do raises ``NotImplementedError`` with a reason;
- ``settings() -> dict``: what changes its numbers (threads, compute dtype, device,
  library versions, oneDNN/TF32 state, ...), for the report.

``Model`` below is what ``build`` returns.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from bench.core.spec import ModelSpec

DTYPES = ("float32", "float64")


class Model(abc.ABC):
    """One built network. Host arrays in and out are NumPy, canonical layouts:
    images ``(N, C, H, W)``, labels one-hot ``(N, classes)``, params as ``bench.core.params``.
    """

    spec: ModelSpec
    dtype: str

    @abc.abstractmethod
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Probabilities ``(N, classes)`` on the host, dropout off."""

    @abc.abstractmethod
    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        """Mean loss and its gradient for every parameter (canonical names and layouts),
        dropout off."""

    @abc.abstractmethod
    def sgd_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        """One in-place plain-SGD update, dropout off; returns the loss before it."""

    def optimizer_step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One in-place step of the spec's own optimizer (``spec.train.optimizer``) at the
        spec's learning rate, dropout off, deterministic; returns the loss before it. For
        SGD it is ``sgd_step`` at ``spec.train.lr``; a backend supporting Adam overrides it."""
        if self.spec.train.optimizer == "sgd":
            return self.sgd_step(x, y, self.spec.train.lr)
        raise NotImplementedError(f"{type(self).__name__}: optimizer {self.spec.train.optimizer!r} not supported")

    @abc.abstractmethod
    def params(self) -> dict[str, np.ndarray]:
        """Current parameters, canonical layout, on the host."""

    @abc.abstractmethod
    def train_step(self, x: Any, y: Any) -> None:
        """The backend's fastest idiomatic training step with the spec's optimizer (dropout
        on, lr from the spec) on batches already passed through ``to_device``."""

    def to_device(self, x: np.ndarray) -> Any:
        """Move/convert a host batch (images or labels) to what ``train_step`` takes."""
        return x

    def device_forward(self, x: Any) -> Any:
        """``forward`` on a batch already through ``to_device``, the probabilities left where and
        how the backend keeps them (no host copy, no layout change): the forward phase the
        harness times, so that every backend's timed region holds the computation alone.
        ``np.asarray`` of the result is ``forward``'s output."""
        raise NotImplementedError(f"{type(self).__name__} has no device_forward")

    def device_loss_and_grads(self, x: Any, y: Any) -> tuple[Any, Any]:
        """``loss_and_grads`` on ``to_device`` batches: ``(loss, gradients)`` in the backend's own
        place and layout (a dict or a sequence of arrays; no host copy, no canonical names or
        layouts), dropout off: the loss_and_grads phase the harness times. ``float(loss)`` is
        ``loss_and_grads``' loss, and the gradients are its gradients, each possibly transposed."""
        raise NotImplementedError(f"{type(self).__name__} has no device_loss_and_grads")

    def flops(self, batch: int) -> dict[str, int]:
        """The FLOPs each phase performs on a batch (``ModelSpec.flops``: direct convolutions);
        a backend whose algorithm performs other work (Numba's Winograd convolutions) says so
        here, and the harness's GFLOP/s and share of the GEMM peak use it."""
        return self.spec.flops(batch)

    def sync(self) -> None:  # noqa: B027 - deliberately a no-op default, not abstract
        """Wait for queued device work (no-op on CPU backends)."""

    def activations(self, x: np.ndarray) -> list[np.ndarray]:
        """Output of every layer (canonical layout, dropout off), for locating the first
        layer that diverges. Optional."""
        raise NotImplementedError(f"{type(self).__name__} does not expose activations")


def to_host(a: Any) -> np.ndarray:
    """A backend's array on the host: CuPy's ``.get()`` (it refuses ``np.asarray``), else ``np.asarray``."""
    return a.get() if hasattr(a, "get") else np.asarray(a)


def build_seeded(module: Any, spec: ModelSpec, params: dict, dtype: str, seed: int) -> tuple[Model, int | None]:
    """``module.build`` with its dropout seeded: ``(model, seed)``, or ``(model, None)`` for a
    backend whose ``build`` takes no ``seed`` (built as it is, its masks not seeded by us)."""
    import inspect

    if "seed" in inspect.signature(module.build).parameters:
        return module.build(spec, params, dtype, seed=seed), seed
    return module.build(spec, params, dtype), None


def check_supported(
    backend: str,
    spec: ModelSpec,
    dtype: str,
    *,
    layers: tuple[str, ...] | None = None,
    losses: tuple[str, ...] | None = None,
    dtypes: tuple[str, ...] = DTYPES,
) -> None:
    """Raise ``NotImplementedError`` naming what ``backend`` does not support."""
    if dtype not in dtypes:
        raise NotImplementedError(f"{backend}: dtype {dtype!r} not supported (supports {dtypes})")
    if losses is not None and spec.loss not in losses:
        raise NotImplementedError(f"{backend}: loss {spec.loss!r} not supported (supports {losses})")
    if layers is not None:
        for i, layer in enumerate(spec.layers):
            if layer.type not in layers:
                raise NotImplementedError(f"{backend}: layer {i} type {layer.type!r} not supported")


def one_hot(labels: np.ndarray, classes: int = 10, dtype: str = "float64") -> np.ndarray:
    """Integer labels ``(N,)`` -> one-hot ``(N, classes)``."""
    out = np.zeros((len(labels), classes), dtype=dtype)
    out[np.arange(len(labels)), labels] = 1
    return out


def conv_w_to_hwio(w: np.ndarray) -> np.ndarray:
    """Canonical conv W ``(O, I, kh, kw)`` -> ``(kh, kw, I, O)`` (Keras/TF/channels-last)."""
    assert w.ndim == 4, w.shape
    return np.ascontiguousarray(w.transpose(2, 3, 1, 0))


def conv_w_from_hwio(w: np.ndarray) -> np.ndarray:
    """``(kh, kw, I, O)`` -> canonical ``(O, I, kh, kw)``."""
    assert w.ndim == 4, w.shape
    return np.ascontiguousarray(w.transpose(3, 2, 0, 1))


def nchw_to_nhwc_rows(spec: ModelSpec, dense_index: int) -> np.ndarray | None:
    """For a dense layer right after ``flatten`` of a ``(C, H, W)`` tensor: the row
    permutation ``perm`` such that ``W_nhwc = W_canonical[perm]`` takes features in NHWC
    flatten order (``h * W * C + w * C + c``) to the canonical NCHW order. ``None`` when
    the dense layer does not follow a flattened image (or C, H or W is 1 so nothing
    moves... still returned for C > 1). The inverse for gradients is ``argsort(perm)``.
    """
    shapes = spec.input_shapes()
    j = dense_index - 1
    while j >= 0 and spec.layers[j].type in ("dropout", "sigmoid", "relu", "tanh"):
        j -= 1
    if j < 0 or spec.layers[j].type != "flatten":
        return None
    src = shapes[j]
    if len(src) != 3:
        return None
    c, h, w = src
    # NHWC position p = (hh, ww, cc) holds canonical feature cc*H*W + hh*W + ww.
    return np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)
