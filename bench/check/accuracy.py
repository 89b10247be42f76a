"""MNIST training and evaluation, identical for every implementation.

The harness owns the data path: it shuffles with ``numpy.random.default_rng(seed)`` (one
permutation per epoch, the same for every backend), slices batches on the host, passes them
through ``model.to_device`` and calls the backend's own ``train_step``. Evaluation after each
epoch runs the backend's ``forward`` in batches of ``eval_batch`` over the (sub)set of the test
set, and computes accuracy and the spec's loss on the host in float64. Inputs are scaled as the
course scales them, pixels / 255 as floats, in one place (``bench.plan.inputs.to_nchw_float``).

Each accuracy seed sets the initial parameters (``init_params(spec, seed)``, the spec's
initialiser), the data order and the backend's dropout stream (``build(..., seed=seed)``):
two implementations on one seed share the first two and differ only in their dropout masks.

Budgets (``train_samples``, ``max_steps``, ``test_samples``) are stated in every record, and
``extrapolated_epoch_s`` scales the measured training time to a 60,000-sample epoch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

FULL_EPOCH = 60000


@dataclass(frozen=True)
class AccuracyBudget:
    epochs: int
    train_samples: int
    test_samples: int
    eval_batch: int
    batch_size: int
    max_steps: int  # per epoch; 0 = no limit
    target_acc: float | None

    @classmethod
    def from_profile(cls, acc: dict[str, Any], spec: Any) -> AccuracyBudget:
        targets = acc.get("targets", {})
        return cls(
            epochs=int(acc.get("epochs") or spec.train.epochs),
            train_samples=int(acc.get("train_samples") or FULL_EPOCH),
            test_samples=int(acc.get("test_samples") or 10000),
            eval_batch=int(acc.get("eval_batch") or 1000),
            batch_size=int(acc.get("batch_size") or spec.train.batch_size),
            max_steps=int(acc.get("max_steps") or 0),
            target_acc=targets.get(spec.name),
        )


def batches(n: int, batch_size: int, rng: np.random.Generator, max_steps: int = 0) -> Iterator[np.ndarray]:
    """Index arrays of one shuffled epoch over ``n`` samples. A last partial batch is dropped
    (Keras ``fit`` would keep it; 60,000 and the profiles' subsets divide by 50, and one batch
    shape spares compiled backends a recompile); every backend gets the same batches."""
    order = rng.permutation(n)
    steps = n // batch_size
    if max_steps:
        steps = min(steps, max_steps)
    for s in range(steps):
        yield order[s * batch_size : (s + 1) * batch_size]


def evaluate(
    model: Any, x: np.ndarray, y: np.ndarray, labels: np.ndarray, loss: str, eval_batch: int
) -> tuple[float, float]:
    """(accuracy, mean loss) of ``model.forward`` over ``x`` in batches; loss in float64 on the host."""
    correct = 0
    loss_sum = 0.0
    for i in range(0, len(x), eval_batch):
        p = np.asarray(model.forward(x[i : i + eval_batch]), dtype=np.float64)  # (B, classes)
        yb = y[i : i + eval_batch].astype(np.float64)
        correct += int((p.argmax(axis=1) == labels[i : i + eval_batch]).sum())
        if loss == "cross_entropy":
            loss_sum += float(-(yb * np.log(np.clip(p, 1e-12, 1.0))).sum())
        else:  # mse: mean over all N * K elements
            loss_sum += float(((p - yb) ** 2).sum()) / p.shape[1]
    return correct / len(x), loss_sum / len(x)


def fit_input(x: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """MNIST ``(N, 1, 28, 28)`` -> ``(N, 1, H, W)`` for a spec with a smaller input (the tiny test
    specs): centre-crop to the largest multiple of ``H`` (``W``), then mean-pool by the factor."""
    c, h, w = shape
    if x.shape[1:] == tuple(shape):
        return x
    if c != x.shape[1] or h > x.shape[2] or w > x.shape[3]:
        raise NotImplementedError(f"MNIST images {x.shape[1:]} do not fit the spec's input shape {tuple(shape)}")
    fh, fw = x.shape[2] // h, x.shape[3] // w
    oh, ow = (x.shape[2] - fh * h) // 2, (x.shape[3] - fw * w) // 2
    crop = x[:, :, oh : oh + fh * h, ow : ow + fw * w]  # (N, C, fh*H, fw*W)
    return crop.reshape(len(x), c, h, fh, w, fw).mean(axis=(3, 5)).astype(x.dtype)  # (N, C, H, W)


def train(
    build: Callable[[], Any],
    data: Any,
    spec: Any,
    budget: AccuracyBudget,
    seed: int,
    progress: Callable[[str], None] = lambda s: None,
) -> list[dict[str, Any]]:
    """Train a freshly built model for ``budget.epochs``; one dict per epoch (accuracy columns)."""
    model = build()
    xtr = fit_input(data.x_train[: budget.train_samples], spec.input_shape)  # (N, C, H, W)
    xte = fit_input(data.x_test[: budget.test_samples], spec.input_shape)
    ytr, yte = data.y_train[: budget.train_samples], data.y_test[: budget.test_samples]
    lte = data.labels_test[: budget.test_samples]
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    trained_s = 0.0
    reached: float | None = None
    for epoch in range(1, budget.epochs + 1):
        progress(f"accuracy seed {seed} epoch {epoch}/{budget.epochs}")
        steps = samples = 0
        t0 = time.perf_counter()
        for idx in batches(len(xtr), budget.batch_size, rng, budget.max_steps):
            model.train_step(model.to_device(xtr[idx]), model.to_device(ytr[idx]))
            steps += 1
            samples += len(idx)
        model.sync()
        epoch_s = time.perf_counter() - t0
        trained_s += epoch_s
        acc, loss = evaluate(model, xte, yte, lte, spec.loss, budget.eval_batch)
        if reached is None and budget.target_acc is not None and acc >= budget.target_acc:
            reached = trained_s
        rows.append(
            {
                "seed": seed,
                "epoch": epoch,
                "train_samples": samples,
                "test_samples": len(xte),
                "steps": steps,
                "batch_size": budget.batch_size,
                "test_acc": acc,
                "test_loss": loss,
                "epoch_s": epoch_s,
                "extrapolated_epoch_s": epoch_s * FULL_EPOCH / samples if samples else None,
                "target_acc": budget.target_acc,
                "time_to_target_s": reached,
                "optimizer": spec.train.optimizer,
                "init": spec.init,
            }
        )
    return rows
