"""MNIST in the harness's form: NCHW floats in [0, 1], one-hot labels, integer labels.

``bench.plan.data`` obtains and verifies the uint8 arrays; this module converts them, the one place
where pixels become ``pixels / 255`` floats (``to_nchw_float``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.plan.data import CLASSES, acquire


@dataclass(frozen=True)
class MnistArrays:
    """MNIST in the harness's canonical form.

    ``x_*``: ``(N, 1, 28, 28)`` float (``dtype``), pixels / 255 in [0, 1];
    ``y_*``: ``(N, 10)`` one-hot in ``dtype``; ``labels_*``: ``(N,)`` integer labels (int64).
    ``train`` / ``test`` give the ``(x, y_onehot)`` pairs; ``source`` says where the data came from.
    """

    x_train: np.ndarray  # (60000, 1, 28, 28)
    y_train: np.ndarray  # (60000, 10)
    labels_train: np.ndarray  # (60000,)
    x_test: np.ndarray  # (10000, 1, 28, 28)
    y_test: np.ndarray  # (10000, 10)
    labels_test: np.ndarray  # (10000,)
    source: str

    @property
    def train(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x_train, self.y_train

    @property
    def test(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x_test, self.y_test


MNIST_SHAPE = (1, 28, 28)


def fits_mnist(spec: Any) -> str | None:
    """Why ``spec`` cannot be trained and scored on MNIST (naming the layer and the field), or
    None. Its output must have MNIST's 10 classes, and its input one channel of at most 28 x 28
    pixels: a smaller input is MNIST centre-cropped and mean-pooled (``bench.check.accuracy``)."""
    c, h, w = (tuple(spec.input_shape) + (None, None, None))[:3]
    if len(spec.input_shape) != 3 or c != MNIST_SHAPE[0] or h > MNIST_SHAPE[1] or w > MNIST_SHAPE[2]:
        return (f"input_shape = {list(spec.input_shape)}: MNIST images are {list(MNIST_SHAPE)} (a spec may take "
                "1 channel of at most 28 x 28: a smaller input is centre-cropped and mean-pooled)")  # fmt: skip
    if spec.num_classes != CLASSES:
        last = max((i for i, layer in enumerate(spec.layers) if layer.type == "dense"), default=None)
        where = f"layer {last} (dense): units = {spec.num_classes}" if last is not None else "the output"
        return f"{where}, but MNIST has {CLASSES} classes"
    return None


def to_nchw_float(x: np.ndarray, dtype: str | np.dtype) -> np.ndarray:
    """uint8 ``(N, H, W)`` -> ``(N, 1, H, W)`` in ``dtype``, divided by 255 (in ``dtype``, as Keras code does)."""
    out = x.reshape(x.shape[0], 1, *x.shape[1:]).astype(dtype)  # (N, 1, H, W)
    out /= out.dtype.type(255)
    return out


def one_hot(labels: np.ndarray, dtype: str | np.dtype, classes: int = CLASSES) -> np.ndarray:
    """Integer labels ``(N,)`` -> one-hot ``(N, classes)`` in ``dtype``."""
    out = np.zeros((len(labels), classes), dtype=dtype)  # (N, classes)
    out[np.arange(len(labels)), labels] = 1
    return out


def mnist_arrays(data_dir: str | os.PathLike | None = None, dtype: str = "float32", **kwargs: Any) -> MnistArrays:
    """``load_mnist`` converted for the harness: NCHW floats in [0, 1], one-hot labels, integer labels."""
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise ValueError(f"dtype must be a float type, got {dtype}")
    ((xtr, ytr), (xte, yte)), source = acquire(data_dir, **kwargs)
    return MnistArrays(
        x_train=to_nchw_float(xtr, dt),
        y_train=one_hot(ytr, dt),
        labels_train=ytr.astype(np.int64),
        x_test=to_nchw_float(xte, dt),
        y_test=one_hot(yte, dt),
        labels_test=yte.astype(np.int64),
        source=source,
    )
