"""Agreement: any implementation against the NumPy float64 reference.

Same parameters (``init_params(spec, seed, bias="uniform")``, so biases are not zero),
same batches. Checked tensor by tensor, then the trajectory (llm.c's ``test_gpt2``
order): every layer's activations (when both sides expose them), forward probabilities,
loss, each named gradient, then ``steps`` steps of the spec's own optimizer
(``model.optimizer_step``: plain SGD or Adam, at the spec's learning rate) on fresh batches
(the loss before each step) and every parameter after them.

Each tensor is checked for shape, then dtype, then values. The value error is
*relative to the tensor's scale*: ``max_rel = max|x - ref| / max|ref|`` (with ``max_abs``
reported too), compared with the tolerance of its phase for the dtype asked, from
``TOLERANCES`` (the one place they are written down).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.core.model import to_host
from bench.core.params import init_params
from bench.core.spec import ModelSpec
from bench.plan import backends
from bench.plan.presets import resolve


@dataclass(frozen=True)
class Tolerance:
    forward: float  # activations and probabilities
    loss: float  # the loss, and the loss before each optimizer step
    grad: float  # every gradient
    params: float  # parameters after the optimizer steps
    adam_params: float | None = None  # the same after Adam steps (see below); None: ``params``


# Derivation: a reduction of K terms reordered differs by about sqrt(K) * eps relative to
# its largest term. The largest reductions here (784-1152 inputs, batch * H * W for conv
# and bias gradients, up to ~4e4 terms) give ~1e-14 in float64 and ~1e-5 in float32;
# gradients go through a few more such layers than the forward pass. float64 keeps four
# orders of headroom and stays inside the 1e-9 goal; float32 is loose enough for a
# framework's own reduction order and tight enough that a layout or sign bug (errors of
# order 1) fails. Adam divides each gradient element by its own magnitude, so an element
# whose gradient is near zero moves by up to ~lr on float32 rounding noise alone
# (measured: 2.0e-5 of the parameter scale on tiny-mlp, 1.2e-5 on dnn after 3 steps): its
# float32 parameter check is 1e-4. float64 keeps 1e-10 (measured <= 1e-14).
TOLERANCES: dict[str, Tolerance] = {
    "float64": Tolerance(forward=1e-10, loss=1e-10, grad=1e-9, params=1e-10, adam_params=1e-10),
    "float32": Tolerance(forward=2e-5, loss=2e-5, grad=2e-4, params=2e-5, adam_params=1e-4),
}


@dataclass
class AgreementResult:
    impl: str
    model: str
    dtype: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    first_divergent_layer: int | None = None
    error: str | None = None
    status: str = "ok"  # ok | disagrees | not_implemented | error

    @property
    def passed(self) -> bool:
        return self.error is None and bool(self.rows) and all(r["ok"] for r in self.rows)

    def failures(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if not r["ok"]]

    def worst(self) -> dict[str, float]:
        """Worst ``max_rel`` per phase."""
        out: dict[str, float] = {}
        for r in self.rows:
            out[r["phase"]] = max(out.get(r["phase"], 0.0), r["max_rel"])
        return out

    def format(self, verbose: bool = False) -> str:
        head = f"{self.impl} {self.model} {self.dtype}: "
        if self.error:
            return head + f"{self.status.upper()}: {self.error}"
        lines = [head + ("PASS" if self.passed else "FAIL")]
        for r in self.rows if verbose else self.failures():
            lines.append(
                f"  {'ok ' if r['ok'] else 'BAD'} {r['phase']:<10} {r['tensor']:<14} "
                f"max_abs={r['max_abs']:.3e} max_rel={r['max_rel']:.3e} tol={r['tol']:.0e}"
                + ("" if r["ok"] else f"  {r.get('detail', '')}")
            )
        if not verbose:
            lines += [f"  worst {p}: {v:.3e}" for p, v in self.worst().items()]
        if self.first_divergent_layer is not None:
            layer = self._layer_name(self.first_divergent_layer)
            lines.append(f"  first diverging layer: {self.first_divergent_layer} ({layer})")
        return "\n".join(lines)

    def _layer_name(self, i: int) -> str:
        try:
            return resolve(self.model).layers[i].type
        except Exception:
            return "?"


def rel_error(got: Any, ref: Any) -> tuple[float, float]:
    """(max_abs, max_rel) with ``max_rel = max|got - ref| / max|ref|`` (max_abs when ref is 0)."""
    ref = np.asarray(ref, dtype=np.float64)
    diff = np.abs(np.asarray(got, dtype=np.float64) - ref)
    max_abs = float(diff.max()) if diff.size else 0.0
    scale = float(np.abs(ref).max()) if ref.size else 0.0
    return max_abs, (max_abs / scale if scale > 0 else max_abs)


def compare_tensor(name: str, phase: str, got: Any, ref: np.ndarray, tol: float, dtypes: tuple[str, ...]) -> dict:
    """Shape, then dtype, then values. Returns one result row."""
    row: dict[str, Any] = {"tensor": name, "phase": phase, "tol": tol, "max_abs": np.inf, "max_rel": np.inf}
    got_a = np.asarray(got)
    ref = np.asarray(ref, dtype=np.float64)
    if got_a.shape != ref.shape:
        return {**row, "ok": False, "detail": f"shape {got_a.shape} != reference {ref.shape}"}
    if got_a.dtype.name not in dtypes:
        return {**row, "ok": False, "detail": f"dtype {got_a.dtype} not in {dtypes}"}
    max_abs, max_rel = rel_error(got_a, ref)
    ok = bool(np.isfinite(max_abs) and max_rel <= tol)
    row.update(max_abs=max_abs, max_rel=max_rel, ok=ok)
    if not ok:
        idx = np.argsort(np.abs(got_a.astype(np.float64) - ref).ravel())[::-1][:3]
        row["detail"] = (
            f"got {np.round(got_a.ravel()[:4].astype(float), 8).tolist()} "
            f"ref {np.round(ref.ravel()[:4], 8).tolist()}; worst at flat {idx.tolist()}"
        )
    return row


def sample_batch(spec: ModelSpec, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random images in [0, 1] ``(N, C, H, W)`` and one-hot labels, reproducible."""
    rng = np.random.default_rng(seed)
    x = rng.random((n, *spec.input_shape))
    y = np.eye(spec.num_classes)[rng.integers(0, spec.num_classes, n)]
    return x, y


def check(
    impl: str,
    spec: ModelSpec | str,
    dtype: str = "float64",
    seed: int = 0,
    batch: int = 8,
    steps: int = 3,
    params: dict[str, np.ndarray] | None = None,
) -> AgreementResult:
    """Compare ``impl`` at ``dtype`` with NumPy float64 on the same params and batches."""
    spec = resolve(spec) if isinstance(spec, str) else spec
    res = AgreementResult(impl, spec.name, dtype)
    tol = TOLERANCES[dtype]
    params = params if params is not None else init_params(spec, seed, bias="uniform")
    ref = backends.get("numpy").reference(spec, params)  # unsharded at any thread count
    try:
        model = backends.get(impl).build(spec, params, dtype)
    except NotImplementedError as e:
        res.error, res.status = str(e), "not_implemented"
        return res
    except Exception as e:
        res.error, res.status = f"build failed: {type(e).__name__}: {e}", "error"
        return res
    dts = (dtype, getattr(model, "compute_dtype", dtype))
    try:
        _check_passes(res, model, ref, spec, tol, dts, seed, batch, steps)
    except Exception as e:
        res.error, res.status = f"{type(e).__name__}: {e}", "error"
        return res
    if not res.passed:
        res.status = "disagrees"
    return res


def _check_passes(res, model, ref, spec, tol: Tolerance, dts, seed: int, batch: int, steps: int) -> None:
    x, y = sample_batch(spec, batch, seed)
    res.first_divergent_layer = _check_activations(res, model, ref, x, tol, dts)
    res.rows.append(compare_tensor("probs", "forward", model.forward(x), ref.forward(x), tol.forward, dts))
    loss, grads = model.loss_and_grads(x, y)
    ref_loss, ref_grads = ref.loss_and_grads(x, y)
    res.rows.append(compare_tensor("loss", "loss", np.float64(loss), ref_loss, tol.loss, ("float64",)))
    if set(grads) != set(ref_grads):
        raise ValueError(f"gradient names {sorted(grads)} != reference {sorted(ref_grads)}")
    for name in ref_grads:
        res.rows.append(compare_tensor(name, "grad", grads[name], ref_grads[name], tol.grad, dts))
    _check_timed_forms(res, model, ref.forward(x), ref_loss, ref_grads, x, y, tol, dts)
    for k in range(steps):
        xk, yk = sample_batch(spec, batch, seed + 1 + k)
        got, want = model.optimizer_step(xk, yk), ref.optimizer_step(xk, yk)
        res.rows.append(compare_tensor(f"loss@step{k}", "loss", np.float64(got), want, tol.loss, ("float64",)))
    got_p, ref_p = model.params(), ref.params()
    ptol = tol.adam_params if spec.train.optimizer == "adam" and tol.adam_params else tol.params
    for name in ref_p:
        res.rows.append(compare_tensor(name, "params", got_p[name], ref_p[name], ptol, dts))


def _norm(a: Any) -> float:
    """Frobenius norm, exactly rounded (``math.fsum``): the same in any layout, bit for bit."""
    a = np.asarray(a, dtype=np.float64).ravel()
    return math.sqrt(math.fsum(a * a))


def _check_timed_forms(res, model, ref_probs, ref_loss, ref_grads: dict, x, y, tol: Tolerance, dts) -> None:
    """What the harness times for forward and loss_and_grads (``device_forward``,
    ``device_loss_and_grads`` on ``to_device`` batches) against the reference too: the probs,
    the loss, and the gradients' Frobenius norms, sorted (the device form keeps the backend's
    own names and layouts, so this is the layout-free check: one wrong or missing gradient
    changes the list)."""
    xd, yd = model.to_device(x), model.to_device(y)
    res.rows.append(compare_tensor("probs (timed)", "forward", to_host(model.device_forward(xd)), ref_probs,
                                   tol.forward, dts))  # fmt: skip
    loss, grads = model.device_loss_and_grads(xd, yd)
    res.rows.append(compare_tensor("loss (timed)", "loss", np.float64(float(to_host(loss))), ref_loss, tol.loss,
                                   ("float64",)))  # fmt: skip
    got = sorted(_norm(to_host(g)) for g in (grads.values() if isinstance(grads, dict) else grads))
    want = sorted(_norm(g) for g in ref_grads.values())
    res.rows.append(compare_tensor("grad norms (timed)", "grad", np.array(got), np.array(want), tol.grad, ("float64",)))


def _check_activations(res, model, ref, x, tol: Tolerance, dts) -> int | None:
    """Per-layer outputs; returns the first layer beyond the forward tolerance."""
    try:
        got = model.activations(x)
    except NotImplementedError:
        return None
    want = ref.activations(x)
    first = None
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        row = compare_tensor(f"layer{i}", "activation", g, w, tol.forward, dts)
        res.rows.append(row)
        if not row["ok"] and first is None:
            first = i
    return first


# ---------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench agree", description=__doc__.splitlines()[0])
    ap.add_argument("--impl", "--impls", dest="impls", default=None, help="comma-separated (default: all available)")
    models = "tiny-mlp,tiny-cnn,mlp,cnn,dnn"
    ap.add_argument("--model", "--models", dest="models", default=models, help="presets or files")
    ap.add_argument("--dtype", default="float64,float32", help="float64, float32, both (the default) or a comma list")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("-v", "--verbose", action="store_true", help="print every tensor, not only failures")
    args = ap.parse_args(argv)
    try:
        specs = [resolve(m) for m in args.models.split(",")]
        avail = backends.available()
        names = args.impls.split(",") if args.impls else [n for n in backends.names() if n != "numpy"]
        unknown = [n for n in names if n not in backends.names()]
        if unknown:
            valid = ", ".join(backends.names())
            raise KeyError(f"unknown implementation(s) {', '.join(unknown)}; valid names: {valid}")
        dtypes = ["float64", "float32"] if args.dtype == "both" else args.dtype.split(",")
        if set(dtypes) - {"float64", "float32"}:
            raise ValueError(f"unknown dtype in {args.dtype!r}; valid: float64, float32, both")
    except (KeyError, ValueError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)  # not the KeyError repr
        return 2
    failed = 0
    for name in names:
        ok, reason = avail[name]
        if not ok:
            print(f"{name}: skipped: {reason}")
            continue
        for spec in specs:
            if name == "pure_python" and not spec.name.startswith("tiny"):
                print(f"{name} {spec.name}: skipped: pure Python on a full preset takes minutes; use tiny-*")
                continue
            for dtype in dtypes:
                res = check(name, spec, dtype, seed=args.seed, batch=args.batch)
                print(res.format(args.verbose), flush=True)
                failed += res.status not in ("ok", "not_implemented")
    return 1 if failed else 0
