"""Agreement of a model with the NumPy float64 reference, for the CuPy tests and GPU report.

``compare(model, spec, ...)`` builds ``XpModel(spec, params, "float64")`` from the same
parameters, feeds both the same batch and returns one row per tensor and phase: probabilities
and activations (``forward``), loss (``loss``), every gradient (``grad``), and the loss and
parameters after each plain-SGD step (``params``). Relative error is ``max_abs /
max|reference|`` per tensor, as in ``bench.agreement``. (The GPU report prefers
``bench.agreement.check`` when it exists; this keeps the CuPy checks self-contained.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bench.params import init_params
from bench.spec import ModelSpec
from implementations.base import Model, one_hot
from implementations.numpy.model import XpModel


@dataclass(frozen=True)
class Tolerance:
    forward: float
    loss: float
    grad: float
    params: float


TOLERANCES = {
    "float64": Tolerance(forward=1e-10, loss=1e-9, grad=1e-9, params=1e-9),
    "float32": Tolerance(forward=1e-5, loss=1e-5, grad=1e-4, params=1e-4),
}


def batch(spec: ModelSpec, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A random image batch (N, C, H, W) in [0, 1) and one-hot labels, float64."""
    rng = np.random.default_rng(seed + 1)
    x = rng.random((n, *spec.input_shape))
    y = one_hot(rng.integers(0, spec.num_classes, n), spec.num_classes)
    return x, y


def _row(tensor: str, phase: str, got, ref, tol: float) -> dict:
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        return {"tensor": tensor, "phase": phase, "max_abs": np.inf, "max_rel": np.inf, "tol": tol, "ok": False}
    max_abs = float(np.max(np.abs(got - ref))) if got.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    max_rel = max_abs / scale if scale > 0 else max_abs
    ok = bool(np.isfinite(max_rel) and max_rel <= tol)
    return {"tensor": tensor, "phase": phase, "max_abs": max_abs, "max_rel": max_rel, "tol": tol, "ok": ok}


def compare(
    build: Callable[[ModelSpec, dict, str], Model],
    spec: ModelSpec,
    dtype: str,
    seed: int = 0,
    n: int = 8,
    steps: int = 3,
    tol: Tolerance | None = None,
) -> list[dict]:
    """Rows comparing ``build(spec, params, dtype)`` with the float64 reference (dropout off)."""
    tol = tol or TOLERANCES[dtype]
    params = init_params(spec, seed, bias="uniform")
    model, ref = build(spec, params, dtype), XpModel(spec, params, "float64")
    x, y = batch(spec, n, seed)
    rows = [_row("probs", "forward", model.forward(x), ref.forward(x), tol.forward)]
    acts = model.activations(x)
    for i, (a, r) in enumerate(zip(acts, ref.activations(x), strict=True)):
        rows.append(_row(f"act{i}.{spec.layers[i].type}", "forward", a, r, tol.forward))
    loss, grads = model.loss_and_grads(x, y)
    ref_loss, ref_grads = ref.loss_and_grads(x, y)
    rows.append(_row("loss", "loss", loss, ref_loss, tol.loss))
    rows += [_row(k, "grad", grads.get(k, np.full(1, np.nan)), g, tol.grad) for k, g in ref_grads.items()]
    for s in range(steps):
        rows.append(
            _row(
                f"loss@step{s}",
                "params",
                model.sgd_step(x, y, spec.train.lr),
                ref.sgd_step(x, y, spec.train.lr),
                tol.loss,
            )
        )
    ref_params = ref.params()
    rows += [_row(k, "params", v, ref_params[k], tol.params) for k, v in model.params().items()]
    return rows


def failures(rows: list[dict]) -> list[dict]:
    return [r for r in rows if not r["ok"]]
