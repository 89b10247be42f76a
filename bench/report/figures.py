"""The report's figures (matplotlib, embedded as base64 PNG): speedup, throughput, accuracy,
agreement error, fraction of peak. ``FIGURES`` is what ``report.html`` shows, in order."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bench.measure.frames import SPEED_KEYS, run_meta
from bench.report.headline import spec_batch
from bench.report.page import colour
from bench.report.render import bools, impl_order, png_uri, sort_rows


def _subplots(n: int, width: float = 5.5, height: float = 3.8) -> tuple[Any, list[Any]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


def _threads(frames: dict[str, pd.DataFrame]) -> str:
    t = run_meta(frames).get("threads")
    return f"{t} thread{'s' if str(t) != '1' else ''}" if t else "threads ?"


def _spec_batch_train(speed: pd.DataFrame) -> pd.DataFrame:
    """train_step rows (else the last phase) at each model's spec batch size, the headline's
    (``bench.report.headline.spec_batch``)."""
    s = speed.drop_duplicates(["impl"] + SPEED_KEYS, keep="last")
    phase = "train_step" if (s["phase"] == "train_step").any() else s["phase"].iloc[-1]
    s = s[s["phase"] == phase]
    keep = [g[pd.to_numeric(g["batch_size"], errors="coerce") == spec_batch(str(m), g["batch_size"])]
            for m, g in s.groupby("model", sort=False)]  # fmt: skip
    return pd.concat(keep) if keep else s


def plain_ticks(ax: Any, axis: str = "y", unit: str = "x") -> None:
    """Plain tick labels on a log axis ("0.5x", "1x", "2x"), never 10^k."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    fmt = FuncFormatter(lambda v, _: f"{v:.3g}{unit}")
    target = ax.yaxis if axis == "y" else ax.xaxis
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(fmt)
    target.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def _bars(ax: Any, d: pd.DataFrame, vals: pd.Series) -> None:
    """One bar per backend in its colour; a bar whose case did not validate is hatched."""
    names = d["impl"].astype(str).tolist()
    ok = bools(d["validated"]).tolist() if "validated" in d else [True] * len(names)
    ax.bar(names, vals, color=[colour(n) for n in names], hatch=["" if v else "//" for v in ok], edgecolor="k", lw=0.5)
    ax.tick_params(axis="x", rotation=45)


def _title(frames: dict[str, pd.DataFrame], d: pd.DataFrame, model: str) -> str:
    dtype = ",".join(sorted(d["dtype"].astype(str).unique()))
    return f"{model} {dtype}: {d['phase'].iloc[0]}, batch {int(d['batch_size'].iloc[0])}, {_threads(frames)}"


def fig_speedup(frames: dict[str, pd.DataFrame], col: str = "speedup_vs_numpy", label: str = "") -> str | None:
    """Per model: throughput against NumPy at the spec's batch, a linear axis from 0, a line at 1x."""
    speed = frames.get("speed")
    if speed is None or speed.empty or pd.to_numeric(speed[col], errors="coerce").isna().all():
        return None
    s = _spec_batch_train(speed)
    models = list(s["model"].unique())
    fig, axes = _subplots(len(models))
    order = impl_order(frames)
    for ax, m in zip(axes, models, strict=True):
        d = sort_rows(s[s["model"] == m], ["impl"], order)
        _bars(ax, d, pd.to_numeric(d[col], errors="coerce"))
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_ylim(bottom=0)
        ax.set_title(_title(frames, d, str(m)), fontsize=9)
        ax.set_ylabel(label or "throughput / NumPy's (1 = NumPy)")
    return png_uri(fig)


def fig_throughput(frames: dict[str, pd.DataFrame]) -> str | None:
    """The batch sweep: samples/s against batch size, a line per backend."""
    speed = frames.get("speed")
    if speed is None or speed.empty:
        return None
    from matplotlib.ticker import ScalarFormatter

    s = speed.drop_duplicates(["impl"] + SPEED_KEYS, keep="last")
    phase = "train_step" if (s["phase"] == "train_step").any() else s["phase"].iloc[-1]
    s = s[s["phase"] == phase]
    models = list(s["model"].unique())
    fig, axes = _subplots(len(models))
    for ax, m in zip(axes, models, strict=True):
        dm = s[s["model"] == m]
        for impl, d in sort_rows(dm, ["impl", "batch_size"], impl_order(frames)).groupby("impl", sort=False):
            ax.plot(d["batch_size"], d["samples_per_s"], marker="o", color=colour(str(impl)), label=str(impl))
        ax.set_xscale("log")
        ax.set_yscale("log")
        plain_ticks(ax, "y", "")
        ax.set_xticks(sorted(pd.to_numeric(dm["batch_size"], errors="coerce").dropna().unique()))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.set_xlabel("batch size")
        ax.set_ylabel("samples/s")
        dtype = ",".join(sorted(dm["dtype"].astype(str).unique()))
        ax.set_title(f"{m} {dtype}: {phase} throughput, {_threads(frames)}", fontsize=9)
        ax.legend(fontsize=7)
    return png_uri(fig)


def fig_accuracy(frames: dict[str, pd.DataFrame]) -> str | None:
    """Test accuracy per epoch, a panel per model, a line per implementation (mean over seeds,
    band min..max) and the course's curve for ``dnn`` (``bench.check.recipes.fig_curves``)."""
    from bench.check.recipes import fig_curves

    acc = frames.get("accuracy")
    if acc is None or acc.empty:
        return None
    return png_uri(fig_curves(acc, impl_order(frames), colour))


def fig_agreement(frames: dict[str, pd.DataFrame]) -> str | None:
    """Per dtype: each tensor's max relative error over its tolerance, one column of points per
    backend (every model, phase and tensor), a line at 1 (the tolerance); inf/NaN drawn on top."""
    agr = frames.get("agreement")
    if agr is None or agr.empty:
        return None
    a = agr.copy()
    a["ratio"] = pd.to_numeric(a["max_rel"], errors="coerce") / pd.to_numeric(a["tol"], errors="coerce")
    dtypes = sorted(a["dtype"].astype(str).unique())
    fig, axes = _subplots(len(dtypes), width=6.5)
    order = impl_order(frames)
    for ax, dt in zip(axes, dtypes, strict=True):
        d = sort_rows(a[a["dtype"].astype(str) == dt], ["impl"], order)
        names = list(dict.fromkeys(d["impl"].astype(str)))
        finite = d["ratio"][np.isfinite(d["ratio"])]
        top = max(10.0, float(finite.max()) * 3) if len(finite) else 10.0
        for i, impl in enumerate(names):
            r = d[d["impl"].astype(str) == impl]["ratio"]
            ok = np.isfinite(r)
            jitter = (np.arange(len(r)) % 7 - 3) * 0.05
            ax.scatter(i + jitter[ok.to_numpy()], r[ok].clip(lower=1e-12), s=10, color=colour(impl), alpha=0.7)
            if (~ok).any():
                ax.scatter([i] * int((~ok).sum()), [top] * int((~ok).sum()), s=40, marker="x", color="red")
        ax.axhline(1.0, color="red", lw=1, label="tolerance")
        ax.set_yscale("log")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=45)
        ax.set_ylabel("max relative error / tolerance")
        ax.set_title(f"{dt}: every tensor against NumPy float64 (below the line: within tolerance)", fontsize=9)
        ax.legend(fontsize=7, loc="upper right")
    return png_uri(fig)


def fig_frac_peak(frames: dict[str, pd.DataFrame]) -> str | None:
    """Per model: % of the run's measured GEMM peak at the spec's batch, a linear axis from 0."""
    speed = frames.get("speed")
    if speed is None or speed.empty or pd.to_numeric(speed["frac_peak"], errors="coerce").isna().all():
        return None
    s = _spec_batch_train(speed)
    models = list(s["model"].unique())
    fig, axes = _subplots(len(models))
    for ax, m in zip(axes, models, strict=True):
        d = sort_rows(s[s["model"] == m], ["impl"], impl_order(frames))
        _bars(ax, d, 100 * pd.to_numeric(d["frac_peak"], errors="coerce"))
        ax.set_ylim(bottom=0)
        ax.set_ylabel("% of measured GEMM peak")
        ax.set_title(_title(frames, d, str(m)), fontsize=9)
    return png_uri(fig)


MODEL_MARKERS = "osD^vP*X"


def fig_roofline(frames: dict[str, pd.DataFrame]) -> str | None:
    """The roofline (Williams, Waterman, Patterson): arithmetic intensity (the model's FLOPs over
    the phase's compulsory bytes, ``spec.traffic``) against the model's FLOPs per second, one
    point per backend and model (train_step at the spec's batch: colour = backend, marker =
    model); the roofs are the run's GEMM peak and its triad bandwidth per memory level."""
    from bench.measure.derived import LEVELS, memory_roofs, peak_by_dtype

    speed, bw = frames.get("speed"), frames.get("bandwidth")
    if speed is None or speed.empty or bw is None or bw.empty:
        return None
    s = _spec_batch_train(speed)
    num = {c: pd.to_numeric(s[c], errors="coerce") for c in ("gflops_model", "median_s", "bytes")}
    s = s.assign(ai=num["gflops_model"] * 1e9 * num["median_s"] / num["bytes"])  # model FLOPs per byte
    s = s[s["ai"].notna() & (s["ai"] > 0)]
    peaks = frames.get("peak")
    peak = peak_by_dtype(peaks.to_dict("records")) if peaks is not None else {}
    roofs = memory_roofs(bw.to_dict("records"))
    dtype = str(s["dtype"].iloc[0]) if len(s) else "float32"
    if s.empty or not roofs or dtype not in peak:
        return None
    fig, (ax,) = _subplots(1, width=7.5, height=4.8)
    x = np.logspace(np.log10(min(s["ai"].min() / 4, 0.1)), np.log10(max(s["ai"].max() * 4, 100)), 200)
    for level, style in zip(LEVELS, ("-", "--", ":"), strict=True):
        if level in roofs:
            gbps = roofs[level][0]
            ax.plot(x, np.minimum(gbps * x, peak[dtype]), color="0.3", ls=style, lw=1, label=f"{level} {gbps:.0f} GB/s")
    ax.axhline(peak[dtype], color="k", lw=1.2, label=f"GEMM peak {peak[dtype]:.0f} GFLOP/s")
    models = list(s["model"].unique())
    for (impl, model), d in s.groupby(["impl", "model"], sort=False):
        y = pd.to_numeric(d["gflops_model"], errors="coerce").median()
        ax.scatter(d["ai"].median(), y, color=colour(str(impl)), edgecolor="k", lw=0.5, zorder=3, s=40,
                   marker=MODEL_MARKERS[models.index(model) % len(MODEL_MARKERS)])  # fmt: skip
    for impl in impl_order(frames):
        if impl in set(s["impl"]):
            ax.scatter([], [], color=colour(impl), edgecolor="k", lw=0.5, label=impl)
    for i, m in enumerate(models):
        ax.scatter([], [], color="w", edgecolor="k", marker=MODEL_MARKERS[i % len(MODEL_MARKERS)], label=str(m))
    ax.set_xscale("log")
    ax.set_yscale("log")
    plain_ticks(ax, "x", "")
    plain_ticks(ax, "y", "")
    ax.set_xlabel("arithmetic intensity (model FLOPs per compulsory byte)")
    ax.set_ylabel("GFLOP/s (model FLOPs)")
    batches = ",".join(str(int(b)) for b in sorted(pd.to_numeric(s["batch_size"]).unique()))
    ax.set_title(f"{dtype}: {s['phase'].iloc[0]}, batch {batches}, {_threads(frames)}", fontsize=9)
    ax.legend(fontsize=7, loc="lower right", ncol=2)
    return png_uri(fig)


FIGURES = (
    ("Speedup against NumPy", fig_speedup),
    ("Throughput against batch size", fig_throughput),
    ("Test accuracy per epoch", fig_accuracy),
    ("Agreement error against its tolerance", fig_agreement),
    ("Fraction of this machine's measured peak", fig_frac_peak),
    ("Roofline", fig_roofline),
)
FIGURE_NOTES = {
    "Speedup against NumPy": "train_step throughput over NumPy's in the same run (dashed line: NumPy); "
    "a hatched bar did not validate (agreement failed).",
    "Throughput against batch size": "The batch sweep; both axes logarithmic.",
    "Test accuracy per epoch": "Mean over seeds, band min..max; dashed: the course's dnn curve.",
    "Agreement error against its tolerance": "Each point a tensor (forward, loss, gradients, steps) of one "
    "model; above the red line fails; a red x is inf or NaN.",
    "Fraction of this machine's measured peak": "FLOPs performed per second against the run's GEMM peak in "
    "the case's dtype; a hatched bar did not validate.",
    "Roofline": "Each point a backend (colour) and model (marker) at train_step; under the slanted roofs a "
    "case is held by memory bandwidth (the level its working set fits in), under the flat one by the GEMM "
    "peak. A point above its roof performs less work than the model's direct count (Winograd).",
}
