"""The first thing a reader sees: one table per model, and whether the run can be trusted.

Per (model, dtype), one row per implementation: ``train_step`` samples/s at the spec's batch
size (the median of the case's process medians), x vs NumPy in the same run, % of the run's
measured GEMM peak in that dtype, agreement (pass/fail and the worst error), final test
accuracy, and the stability verdict of the speed case (``bench.measure.stability``). The batch size
is the preset's ``train.batch_size`` when the model is a preset, else the largest measured.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from bench.measure import stability
from bench.plan.sides import same_side

# "% GEMM peak": the FLOPs the implementation performs per second against the in-run GEMM peak;
# "% peak, model FLOPs": the model's direct count instead (an effective rate: Numba's Winograd
# convolutions perform ~2.3x fewer FLOPs, so theirs can pass 100 %)
# "x of limit": the roofline's bound over the time (bench.measure.derived.roofline; 1 = at the
# machine's limit), "bound": the term that binds (compute, or the memory level the step fits in)
COLUMNS = [
    "impl", "batch", "train_step samples/s", "x vs numpy", "% GEMM peak", "% peak, model FLOPs", "x of limit",
    "bound", "agreement", "final acc", "stability",
]  # fmt: skip


def spec_batch(model: str, measured: pd.Series) -> int | None:
    from bench.core.spec import SpecError
    from bench.plan.presets import preset

    sizes = sorted(int(b) for b in pd.to_numeric(measured, errors="coerce").dropna().unique())
    try:
        b = int(preset(model).train.batch_size)
        if b in sizes:
            return b
    except (SpecError, KeyError, FileNotFoundError, ValueError):
        pass
    return sizes[-1] if sizes else None


def _agreement(frames: dict[str, pd.DataFrame], impl: str, model: str, dtype: str) -> str:
    agr = frames.get("agreement")
    if agr is None or agr.empty:
        return ""
    g = agr[(agr["impl"] == impl) & (agr["model"] == model) & (agr["dtype"] == dtype)]
    if g.empty:
        return "not checked"
    rel = pd.to_numeric(g["max_rel"], errors="coerce")
    bad = int((~g["ok"].fillna(False).astype(bool)).sum())
    worst = f"{rel.max():.1e}" if rel.notna().any() else "?"
    return f"FAIL ({bad} tensors; worst {worst})" if bad else f"pass (worst {worst})"


def _accuracy(frames: dict[str, pd.DataFrame], impl: str, model: str, dtype: str) -> str:
    acc = frames.get("accuracy")
    if acc is None or acc.empty:
        return ""
    g = acc[(acc["impl"] == impl) & (acc["model"] == model) & (acc["dtype"] == dtype)].copy()
    if g.empty:
        return ""
    g["epoch"] = pd.to_numeric(g["epoch"], errors="coerce")
    last = g[g["epoch"] == g["epoch"].max()]
    a = pd.to_numeric(last["test_acc"], errors="coerce").mean()
    n = pd.to_numeric(last.get("test_samples"), errors="coerce").max() if "test_samples" in last else math.nan
    if math.isnan(a):
        return "NaN"
    return f"{a:.4f}" + (f" (n={int(n)}, ep {int(g['epoch'].max())})" if not math.isnan(n) else "")


def headline_tables(frames: dict[str, pd.DataFrame], cores: int | None = None) -> dict[str, pd.DataFrame]:
    """``{"<model> <dtype>": table}`` in the order the models were run."""
    speed = frames.get("speed")
    if speed is None or speed.empty:
        return {}
    cases = stability.case_table(speed, cores)
    train = cases[cases["phase"] == "train_step"]
    out: dict[str, pd.DataFrame] = {}
    for (model, dtype), g in train.groupby(["model", "dtype"], sort=False):
        b = spec_batch(str(model), g["batch_size"])
        g = g[pd.to_numeric(g["batch_size"], errors="coerce") == b]
        ref = dict(zip(g["impl"], g["median_s"], strict=True))
        peak = _frac_peak(speed, str(model), str(dtype), b)
        peak_model = _frac_peak(speed, str(model), str(dtype), b, "frac_peak_model")
        limit = _frac_peak(speed, str(model), str(dtype), b, "x_of_limit")
        bound = _bound(speed, str(model), str(dtype), b)
        rows = []
        for r in g.itertuples(index=False):
            sps = b / r.median_s if r.median_s else math.nan
            t_np = ref.get(same_side("numpy", r.impl))  # its own side's NumPy in an A/B run
            x = float(t_np) / r.median_s if t_np and r.median_s else math.nan
            rows.append(
                {
                    "impl": r.impl,
                    "batch": b,
                    "train_step samples/s": _num(sps, "{:,.0f}" if sps >= 100 else "{:.3g}"),
                    "x vs numpy": _num(x, "{:.2f}x" if x >= 0.01 else "{:.2g}x"),
                    "% GEMM peak": _pct(100 * peak.get(r.impl, math.nan)),
                    "% peak, model FLOPs": _pct(100 * peak_model.get(r.impl, math.nan)),
                    "x of limit": _num(limit.get(r.impl, math.nan), "{:.2f}"),
                    "bound": bound.get(r.impl, ""),
                    "agreement": _agreement(frames, r.impl, str(model), str(dtype)),
                    "final acc": _accuracy(frames, r.impl, str(model), str(dtype)),
                    "stability": "stable" if r.stable else f"UNSTABLE: {r.flags}",
                }
            )
        out[f"{model} {dtype}"] = pd.DataFrame(rows, columns=COLUMNS)
    return out


def _num(v: float, fmt: str) -> str:
    return "" if v is None or math.isnan(v) else fmt.format(v)


def _pct(v: float) -> str:
    return _num(v, "{:.1f}%" if v >= 1 else "{:.2g}%")


def _frac_peak(
    speed: pd.DataFrame, model: str, dtype: str, batch: int | None, column: str = "frac_peak"
) -> dict[str, float]:
    s = speed[(speed["model"] == model) & (speed["dtype"] == dtype) & (speed["phase"] == "train_step")]
    s = s[pd.to_numeric(s["batch_size"], errors="coerce") == batch]
    if column not in s:
        return {}
    return s.assign(f=pd.to_numeric(s[column], errors="coerce")).groupby("impl")["f"].median().to_dict()


def _bound(speed: pd.DataFrame, model: str, dtype: str, batch: int | None) -> dict[str, str]:
    """Per implementation, the roofline term that binds its train_step at ``batch``."""
    s = speed[(speed["model"] == model) & (speed["dtype"] == dtype) & (speed["phase"] == "train_step")]
    s = s[pd.to_numeric(s["batch_size"], errors="coerce") == batch]
    if "bound" not in s:
        return {}
    return {str(i): str(v.dropna().iloc[0]) for i, v in s.groupby("impl")["bound"] if v.notna().any()}


def stability_lines(frames: dict[str, pd.DataFrame], cores: int | None = None) -> list[str]:
    """The run-level verdict as Markdown lines: stable, or unstable with every reason."""
    speed = frames.get("speed")
    if speed is None or speed.empty:
        return ["_No speed figures in this run._"]
    cases = stability.case_table(speed, cores)
    bound = speed["bound"].dropna().astype(str) if "bound" in speed else pd.Series(dtype=str)
    binding = {b[len("memory (") : -1] for b in bound if b.startswith("memory (")}  # the roofs a case sits under
    ok, reasons = stability.run_verdict(cases, frames.get("peak"), frames.get("bandwidth"), binding)
    procs = int(cases["processes"].max()) if len(cases) else 0
    if ok:
        return [f"**Stable run**: every train_step case within its limits ({procs} processes per case at most)."]
    lines = ["**Unstable run: repeat it before acting on its speed figures.** Reasons:", ""]
    return lines + [f"- {r}" for r in reasons]


def usable_cores(frames: dict[str, pd.DataFrame]) -> int | None:
    for df in frames.values():
        for col in ("env.cpu_cores_usable", "env.threads", "run.threads"):
            if col in df and len(df) and pd.notna(df[col].iloc[0]):
                try:
                    return int(df[col].iloc[0])
                except (TypeError, ValueError):
                    continue
    return None


def headline_markdown(frames: dict[str, pd.DataFrame], table_md: Any) -> list[str]:
    """The headline block of ``summary.md``: the stability verdict, a table per model, then the
    time to accuracy of the models trained to their full recipe."""
    cores = usable_cores(frames)
    out = ["## Headline", "", *stability_lines(frames, cores), ""]
    for title, t in headline_tables(frames, cores).items():
        out += [f"### {title}", "", table_md(t), ""]
    lines = time_to_accuracy_lines(frames)
    if lines:
        out += ["### Time to accuracy", "", *lines, ""]
    return out


def time_to_accuracy_lines(frames: dict[str, pd.DataFrame]) -> list[str]:
    """Per model trained to its spec's epochs (the ``full`` and ``learning`` profiles), each
    backend's final accuracy and training time to the target: median over seeds and its range
    (``bench.check.recipes.headline``); a budget-limited run has none."""
    from bench.check.recipes import _recipe_epochs, headline

    acc = frames.get("accuracy")
    if acc is None or acc.empty:
        return []
    epochs = pd.to_numeric(acc["epoch"], errors="coerce")
    full = [
        m
        for m in acc["model"].dropna().unique()
        if (e := _recipe_epochs(str(m))) and epochs[acc["model"] == m].max() >= e
    ]
    return headline(acc[acc["model"].isin(full)]) if full else []
