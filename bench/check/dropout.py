"""Training-mode dropout, checked through the backend's own ``train_step``, not assumed.

The contract has no call that returns a dropout mask, so the check reads the masks off one
SGD step of a probe network, ``flatten -> dense(U) -> sigmoid -> dropout(rate) -> dense(10) ->
softmax`` (MSE), built with the second dense's weights at zero:

- with ``W2 = 0`` the output, and so the output's error ``dz``, is the same with and without
  dropout, and the hidden layer gets no gradient;
- so at batch 1, SGD moves ``W2[j, :]`` by ``-lr * m_j * h_j * dz``, where ``m_j`` is unit j's
  mask value (0, or the inverted-dropout scale ``1 / (1 - rate)``), and ``loss_and_grads``
  (dropout off) gives ``h_j * dz`` exactly;
- their ratio is ``m_j``, one Bernoulli draw per unit and step.

``check`` builds the probe ``builds`` times (seeds 0..builds-1: each the backend's own mask
stream), takes one step on each, and tests, with ``Z`` binomial standard errors:

- every ratio is 0 or the scale, within the dtype's tolerance (``SCALE_RTOL``): a backend that
  does not rescale, or rescales by the keep probability, fails;
- the kept fraction is within ``Z`` standard errors of ``1 - rate``: a wrong rate fails;
- two seeds' masks agree on a unit as often as independent draws do (``p^2 + (1-p)^2``): a
  backend that ignores its seed (every build the same mask) fails.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.core.spec import ModelSpec

Z = 5.0  # binomial standard errors: a false alarm ~ 6e-7 per test
SCALE_RTOL = {"float32": 1e-4, "float64": 1e-9}  # the ratio of two float results, each ~eps off


def probe_spec(rate: float, units: int = 2000, inputs: int = 16) -> ModelSpec:
    """The probe network (input ``(1, 4, inputs // 4)``, lr 0.5, SGD)."""
    return ModelSpec.from_dict(
        {
            "name": f"dropout-probe-{rate:g}",
            "input_shape": [1, 4, inputs // 4],
            "loss": "mse",
            "layers": [
                {"type": "flatten"},
                {"type": "dense", "units": units},
                {"type": "sigmoid"},
                {"type": "dropout", "rate": rate},
                {"type": "dense", "units": 10},
                {"type": "softmax"},
            ],
            "train": {"lr": 0.5, "batch_size": 1, "epochs": 1},
        }
    )


@dataclass
class DropoutResult:
    rate: float
    draws: int
    kept_fraction: float
    kept_bound: float  # |kept_fraction - (1 - rate)| allowed
    scale_error: float  # worst |ratio - scale| / scale over the kept units
    off_grid: int  # ratios neither 0 nor the scale
    same_unit: float  # how often two seeds' masks agree on a unit
    same_unit_want: float  # p^2 + (1 - p)^2: independent draws
    same_unit_bound: float

    @property
    def ok(self) -> bool:
        return (
            self.off_grid == 0
            and abs(self.kept_fraction - (1 - self.rate)) <= self.kept_bound
            and abs(self.same_unit - self.same_unit_want) <= self.same_unit_bound
        )

    def detail(self) -> str:
        return (
            f"rate {self.rate:g}: kept {self.kept_fraction:.4f} of {self.draws} draws (want {1 - self.rate:.4f} "
            f"+- {self.kept_bound:.4f}); {self.off_grid} values neither 0 nor 1/(1-rate) (worst scale error of a "
            f"kept unit {self.scale_error:.1e}); two seeds agree on {self.same_unit:.4f} of the units (independent "
            f"draws: {self.same_unit_want:.4f} +- {self.same_unit_bound:.4f})"
        )


def masks(module: Any, rate: float, dtype: str, builds: int = 8, units: int = 2000) -> np.ndarray:
    """The dropout mask values (``(builds, units)``: 0 or the scale) the backend's ``train_step``
    applied, read off the probe's ``W2`` update."""
    from bench.core.model import build_seeded
    from bench.core.params import init_params

    spec = probe_spec(rate, units)
    params = init_params(spec, seed=0)
    params["4.W"] = np.zeros_like(params["4.W"])  # (units, 10): no dropout effect on the output
    rng = np.random.default_rng(7)
    x = rng.random((1, *spec.input_shape)).astype(dtype)  # (1, 1, 4, 4)
    y = np.eye(10, dtype=dtype)[[3]]  # (1, 10)
    out = np.empty((builds, units))
    for seed in range(builds):
        model, _ = build_seeded(module, spec, {k: v.astype(dtype) for k, v in params.items()}, dtype, seed)
        _, grads = model.loss_and_grads(x, y)  # dropout off: h_j * dz
        g = np.asarray(grads["4.W"], dtype=np.float64)  # (units, 10)
        k = int(np.argmax(np.abs(g).sum(axis=0)))  # the output whose error is largest
        model.train_step(model.to_device(x), model.to_device(y))
        model.sync()
        moved = np.asarray(model.params()["4.W"], dtype=np.float64)[:, k]  # W2 was 0: this is the update
        out[seed] = moved / (-spec.train.lr * g[:, k])
    return out


def check(module: Any, rate: float, dtype: str = "float64", builds: int = 8, units: int = 2000) -> DropoutResult:
    """The three tests above on ``builds x units`` mask values of ``module``'s ``train_step``."""
    m = masks(module, rate, dtype, builds, units)
    scale = 1.0 / (1.0 - rate)
    kept = np.abs(m) > 0.5 * scale  # (builds, units)
    err = np.where(kept, np.abs(m - scale), np.abs(m)) / scale
    p, n = 1.0 - rate, m.size
    same = kept[1:] == kept[:-1]  # consecutive seeds, unit by unit
    want = p * p + (1 - p) * (1 - p)
    return DropoutResult(
        rate=rate,
        draws=n,
        kept_fraction=float(kept.mean()),
        kept_bound=Z * math.sqrt(p * (1 - p) / n),
        scale_error=float(err[kept].max()) if kept.any() else math.inf,
        off_grid=int((err > SCALE_RTOL[dtype]).sum()),
        same_unit=float(same.mean()),
        same_unit_want=want,
        same_unit_bound=Z * math.sqrt(want * (1 - want) / max(same.size, 1)),
    )
