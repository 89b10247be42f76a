"""The accuracy half of a report: the recipes' learning curves side by side.

From the ``accuracy`` records (one row per implementation, model, seed and epoch):

- ``final_table``: final test accuracy per implementation (mean over seeds) with its
  binomial 95% interval (Wilson, ``n`` = test images), time per epoch, time to target
  (training time until the first epoch at or above the profile's target; median over the
  seeds that reached it) and, for a budget-limited run (pure Python), the full recipe's
  time extrapolated from the measured steps;
- ``equivalence_table``: does an implementation learn like the NumPy reference? Final
  accuracies over seeds, decided by ``bench.check.learning`` (Welch's test for a difference,
  two one-sided tests for sameness within 0.2 percentage points, "not decidable" otherwise or
  on one seed), with NumPy against NumPy on two seed sets as the A/A control;
- ``course_table``: the ``dnn`` curve against the course's published one, and whether the
  course's final 97.74% lies within our binomial 95% interval;
- ``fig_curves``: test accuracy per epoch, one panel per model, a line per implementation
  (mean over seeds, the band their min..max) and the course's curve for ``dnn``.

Inputs are pixels / 255 (``bench.plan.inputs``); the initialiser and optimizer are the spec's and
are stated per row (``init``, ``optimizer``).

``python -m bench.report.recipes OUT_DIR RUN_DIR... [--target MODEL=ACC]`` writes ``recipes.md`` and
``recipes.html`` from the accuracy records of one or more runs (e.g. one run per model of the
``full`` profile); ``--target`` recomputes the time to a target chosen after the run.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

# The course's Keras DNN (flatten, dense 128 relu, dropout 0.2, dense 10 softmax, Adam):
# test accuracy after each of its 10 epochs, as the course reports it.
COURSE_CURVES: dict[str, list[float]] = {
    "dnn": [0.9522, 0.9691, 0.9714, 0.9752, 0.9775, 0.9790, 0.9795, 0.9769, 0.9781, 0.9774],
}
Z95 = 1.959963984540054
REFERENCE = "numpy"


def wilson(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``p`` observed on ``n`` trials."""
    if n <= 0 or not np.isfinite(p):
        return (math.nan, math.nan)
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (centre - half, centre + half)


def _numeric(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    for c in ("test_acc", "epoch", "epoch_s", "time_to_target_s", "extrapolated_epoch_s", "test_samples", "steps"):
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    return df


def finals(acc: pd.DataFrame) -> pd.DataFrame:
    """The last epoch of every (impl, model, dtype, seed)."""
    a = _numeric(acc)
    return a.sort_values("epoch").groupby(["impl", "model", "dtype", "seed"], dropna=False).tail(1)


def _recipe_epochs(model: str) -> int | None:
    from bench.core.spec import SpecError
    from bench.plan.presets import preset

    try:
        return preset(model).train.epochs
    except SpecError:
        return None


def _first(df: pd.DataFrame, col: str) -> Any:
    """The first non-missing value of ``col`` (None when absent: records of older runs)."""
    if col not in df.columns or not df[col].notna().any():
        return None
    return df[col].dropna().iloc[0]


def retarget(acc: pd.DataFrame, targets: dict[str, float]) -> pd.DataFrame:
    """The records with ``target_acc``/``time_to_target_s`` recomputed for the models in
    ``targets`` from the per-epoch curve (training time summed until the first epoch at or
    above the target), e.g. for a target chosen after the run."""
    a = _numeric(acc).sort_values("epoch")
    for model, target in targets.items():
        m = a["model"] == model
        a.loc[m, "target_acc"] = target
        for _, g in a[m].groupby(["impl", "dtype", "seed"], dropna=False):
            hit = g.index[g["test_acc"] >= target]
            reached = float(g["epoch_s"].cumsum().loc[hit[0]]) if len(hit) else None
            a.loc[g.index, "time_to_target_s"] = None
            if reached is not None:
                a.loc[g.loc[hit[0] :].index, "time_to_target_s"] = reached
    return a


def final_table(acc: pd.DataFrame) -> pd.DataFrame:
    """Final accuracy with its binomial 95% interval, time per epoch, time to target."""
    a, last = _numeric(acc), finals(acc)
    rows = []
    for (impl, model, dtype), f in last.groupby(["impl", "model", "dtype"], sort=False, dropna=False):
        e = a[(a["impl"] == impl) & (a["model"] == model) & (a["dtype"] == dtype)]
        n = int(f["test_samples"].min()) if f["test_samples"].notna().any() else 0
        p = float(f["test_acc"].mean())
        lo, hi = wilson(p, n)
        reached = f["time_to_target_s"].dropna()
        epochs = _recipe_epochs(str(model))
        full_epochs = epochs is not None and int(f["epoch"].max()) >= epochs
        partial = not full_epochs or bool((e["extrapolated_epoch_s"] > 1.05 * e["epoch_s"]).any())
        rows.append(
            {
                "model": model,
                "impl": impl,
                "dtype": dtype,
                "optimizer": e["optimizer"].dropna().iloc[0]
                if "optimizer" in e and e["optimizer"].notna().any()
                else None,
                "init": e["init"].dropna().iloc[0] if "init" in e and e["init"].notna().any() else None,
                "seeds": int(f["seed"].nunique()),
                "epochs": int(f["epoch"].max()),
                "test_images": n,
                "final_acc": p,
                "ci95_low": lo,
                "ci95_high": hi,
                "seed_min": float(f["test_acc"].min()),
                "seed_max": float(f["test_acc"].max()),
                "epoch_s": float(e["epoch_s"].mean()),
                "target": f["target_acc"].dropna().max() if f["target_acc"].notna().any() else None,
                "reached": f"{len(reached)}/{len(f)}",
                "time_to_target_s": float(reached.median()) if len(reached) else None,
                "time_to_target_min_s": float(reached.min()) if len(reached) else None,
                "time_to_target_max_s": float(reached.max()) if len(reached) else None,
                "full_recipe_s_extrapolated": float(e["extrapolated_epoch_s"].mean()) * epochs
                if partial and epochs
                else None,
            }
        )
    return pd.DataFrame(rows)


def equivalence_table(acc: pd.DataFrame, reference: str = REFERENCE) -> pd.DataFrame:
    """Each implementation's final accuracy against the reference's (``bench.check.learning``:
    Welch's test for a difference, TOST for sameness within the margin, "not decidable" when
    neither holds or a side has one seed), then the reference against itself on its other seeds
    (the A/A control) with the test's false-alarm rate over random splits of all its seeds."""
    from bench.check import learning

    last = finals(acc)
    rows = []
    for (model, dtype), g in last.groupby(["model", "dtype"], sort=False, dropna=False):
        ref = g[g["impl"] == reference]
        if ref.empty or ref["test_samples"].isna().any():
            continue
        n = int(ref["test_samples"].min())
        g = g[g["test_samples"] == n]  # a subset-evaluated run (pure Python) is not comparable
        by_seed = ref.set_index("seed")["test_acc"]
        shared: set = set()
        for impl, f in g.groupby("impl", sort=False):
            if impl == reference:
                continue
            seeds = set(f["seed"]) & set(by_seed.index)
            shared |= seeds
            base = by_seed.loc[sorted(seeds)] if len(seeds) >= 2 else by_seed
            c = learning.compare(f["test_acc"].to_numpy(), base.to_numpy())
            rows.append(
                _eq_row(model, impl, dtype, c, reference)
                | {"max_curve_gap": _curve_gap(acc, model, dtype, impl, reference)}
            )
        rest = sorted(set(by_seed.index) - shared)
        if shared and len(rest) >= 2:  # the reference on seeds no one else ran, against its shared ones
            c = learning.compare(by_seed.loc[rest].to_numpy(), by_seed.loc[sorted(shared)].to_numpy())
            rows.append(
                _eq_row(
                    model, f"{reference} (A/A: seeds {_span(rest)} vs {_span(sorted(shared))})", dtype, c, reference
                )
                | {"false_alarm_rate": learning.false_alarm_rate(by_seed.to_numpy())}
            )
    return pd.DataFrame(rows)


def _eq_row(model: Any, impl: Any, dtype: Any, c: Any, reference: str) -> dict[str, Any]:
    return {
        "model": model,
        "impl": impl,
        "dtype": dtype,
        "seeds": f"{c.n_a}/{c.n_b}",
        "final_acc": c.mean_a,
        f"{reference}_final_acc": c.mean_b,
        "difference": c.difference,
        "ci90_low": c.ci90[0],
        "ci90_high": c.ci90[1],
        "mdd_80pct": c.mdd,
        "verdict": c.verdict,
    }


def _span(seeds: list[Any]) -> str:
    s = [int(x) for x in seeds]
    return f"{s[0]}-{s[-1]}" if s == list(range(s[0], s[-1] + 1)) and len(s) > 2 else ",".join(map(str, s))


def _curve_gap(acc: pd.DataFrame, model: Any, dtype: Any, impl: Any, reference: str) -> float | None:
    """Largest per-epoch gap between the mean curves of ``impl`` and the reference."""
    a = _numeric(acc)
    a = a[(a["model"] == model) & (a["dtype"] == dtype)]
    curves = a.groupby(["impl", "epoch"])["test_acc"].mean()
    try:
        gap = (curves.loc[impl] - curves.loc[reference]).abs().dropna()
    except KeyError:
        return None
    return float(gap.max()) if len(gap) else None


def course_table(acc: pd.DataFrame) -> pd.DataFrame:
    """Per epoch: the course's test accuracy and each implementation's mean over seeds; the
    last row says whether the course's final accuracy is inside our 95% interval."""
    a = _numeric(acc)
    rows = []
    for model, course in COURSE_CURVES.items():
        m = a[a["model"] == model]
        if m.empty:
            continue
        curves = m.groupby(["impl", "epoch"])["test_acc"].mean().unstack("impl")
        for ep, want in enumerate(course, start=1):
            row: dict[str, Any] = {"model": model, "epoch": ep, "course": want}
            for impl in curves.columns:
                row[impl] = curves[impl].get(ep)
            rows.append(row)
        fin = final_table(m)
        verdict: dict[str, Any] = {"model": model, "epoch": "reproduces final?", "course": course[-1]}
        for r in fin.itertuples():
            inside = r.ci95_low <= course[-1] <= r.ci95_high
            verdict[r.impl] = f"{'yes' if inside else 'no'} [{r.ci95_low:.4f}, {r.ci95_high:.4f}]"
        rows.append(verdict)
    return pd.DataFrame(rows)


def fig_curves(acc: pd.DataFrame, order: dict[str, int] | None = None, colour: Any = None) -> Any:
    """The figure (matplotlib), one panel per model; ``colour(impl)``: each backend's colour
    (the reports pass ``bench.report.page.colour``), else matplotlib's cycle."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a = _numeric(acc)
    models = list(dict.fromkeys(a["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.0), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        m = a[a["model"] == model]
        impls = sorted(m["impl"].unique(), key=lambda i: (order or {}).get(i, 99))
        for impl in impls:
            c = m[m["impl"] == impl].groupby("epoch")["test_acc"].agg(["mean", "min", "max"])
            kw = {"color": colour(str(impl))} if colour else {}
            line = ax.plot(c.index, c["mean"], marker="o", ms=3, label=str(impl), **kw)[0]
            if (c["max"] > c["min"]).any():
                ax.fill_between(c.index, c["min"], c["max"], color=line.get_color(), alpha=0.2)
        if model in COURSE_CURVES:
            course = COURSE_CURVES[model]
            ax.plot(range(1, len(course) + 1), course, "k--", marker="s", ms=3, label="course (Keras)")
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy")
        ax.set_title(f"{model}: test accuracy per epoch")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


NOTES = (
    "Inputs: MNIST pixels / 255 as floats (bench.plan.inputs). Initialisation: the spec's `init` "
    "(glorot_uniform = Keras' default for every kernel, he_uniform = He for kernels followed by relu), "
    "biases zero. Optimizer: the spec's (`sgd`, or `adam` in Keras' form with beta_1 0.9, beta_2 0.999, "
    "epsilon 1e-7). Each seed fixes the initial parameters, the data order and the backend's dropout "
    "stream (dropout_seed). Intervals: Wilson 95% on the test images evaluated; time to target: training "
    "time (evaluation excluded) until the first epoch at or above the target, median over seeds that "
    "reached it; full_recipe_s_extrapolated: a budget-limited run's measured time per step scaled to the "
    "recipe's epochs."
)


def headline(acc: pd.DataFrame) -> list[str]:
    """One line per model: final accuracy and time to target per implementation, fastest first."""
    lines = []
    fin = final_table(acc)
    for model, f in fin.groupby("model", sort=False):
        target = f["target"].dropna().max() if f["target"].notna().any() else None
        f = f.sort_values("time_to_target_s", na_position="last")
        parts = []
        for r in f.itertuples():
            if pd.notna(r.time_to_target_s):
                lo, hi = r.time_to_target_min_s, r.time_to_target_max_s
                spread = f" ({lo:.0f}-{hi:.0f} s)" if r.seeds > 1 and pd.notna(lo) else ""
                reach = f"{r.time_to_target_s:.0f} s{spread}, {r.reached} seeds reached it"
            else:
                reach = f"not reached in {r.epochs} epochs"
            extra = (
                f", full recipe ~{r.full_recipe_s_extrapolated / 3600:.1f} h extrapolated"
                if pd.notna(r.full_recipe_s_extrapolated)
                else ""
            )
            parts.append(f"{r.impl} {r.final_acc:.4f} ({r.epochs} ep, {r.seeds} seeds; {reach}{extra})")
        head = f"**{model}**" + (f" (time to {target:.1%})" if target else "")
        lines.append(f"- {head}: " + "; ".join(parts))
    return lines


def sections(acc: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """(title, text, table) for the report writers."""
    return [
        ("Recipes: final test accuracy, 95% interval, time to target", NOTES, final_table(acc)),
        (
            "Do implementations learn like the NumPy reference?",
            "Final test accuracy over seeds (same initial parameters and data order per seed, each "
            "backend's own dropout stream) against NumPy's: DIFFERS when Welch's t-test finds a "
            "difference (5 %), same when the 90 % interval of the difference lies within +-0.2 "
            "percentage points (two one-sided tests), else not decidable; one seed is never decidable. "
            "`mdd_80pct`: the smallest difference these seeds detect with 80 % power. The A/A row tests "
            "NumPy on its extra seeds against NumPy on the shared ones; `false_alarm_rate`: how often "
            "the test says DIFFERS between random halves of NumPy's seeds (5 % when it holds its level). "
            "bench/check/learning.py has the details.",
            equivalence_table(acc),
        ),
        ("dnn against the course's published curve", "", course_table(acc)),
    ]
