"""The report's figures (matplotlib, embedded as base64 PNG): speedup, throughput, accuracy,
agreement error, fraction of peak. ``FIGURES`` is what ``report.html`` shows, in order."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from bench.measure.frames import SPEED_KEYS
from bench.report.render import bools, impl_order, png_uri, sort_rows


def _subplots(n: int, width: float = 5.5, height: float = 3.8) -> tuple[Any, list[Any]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


def _largest_batch_train(speed: pd.DataFrame) -> pd.DataFrame:
    """train_step rows (else the last phase) at each model's largest batch."""
    s = speed.drop_duplicates(["impl"] + SPEED_KEYS, keep="last")
    phase = "train_step" if (s["phase"] == "train_step").any() else s["phase"].iloc[-1]
    s = s[s["phase"] == phase]
    big = s.groupby("model")["batch_size"].transform("max")
    return s[s["batch_size"] == big]


def fig_speedup(frames: dict[str, pd.DataFrame], col: str = "speedup_vs_numpy", label: str = "") -> str | None:
    speed = frames.get("speed")
    if speed is None or speed.empty or pd.to_numeric(speed[col], errors="coerce").isna().all():
        return None
    s = _largest_batch_train(speed)
    models = list(s["model"].unique())
    fig, axes = _subplots(len(models))
    order = impl_order(frames)
    for ax, m in zip(axes, models, strict=True):
        d = sort_rows(s[s["model"] == m], ["impl"], order)
        vals = pd.to_numeric(d[col], errors="coerce")
        ax.bar(d["impl"].astype(str), vals, color=["C2" if v else "C3" for v in bools(d["validated"])])
        ax.axhline(1.0, color="k", lw=0.8)
        ax.ticklabel_format(axis="y", style="plain", useOffset=False)  # ratios: linear, plain ticks
        ax.set_title(f"{m}: {d['phase'].iloc[0]}, batch {int(d['batch_size'].iloc[0])}")
        ax.set_ylabel(label or col)
        ax.tick_params(axis="x", rotation=45)
    return png_uri(fig)


def fig_throughput(frames: dict[str, pd.DataFrame]) -> str | None:
    speed = frames.get("speed")
    if speed is None or speed.empty:
        return None
    s = speed.drop_duplicates(["impl"] + SPEED_KEYS, keep="last")
    phase = "train_step" if (s["phase"] == "train_step").any() else s["phase"].iloc[-1]
    s = s[s["phase"] == phase]
    models = list(s["model"].unique())
    fig, axes = _subplots(len(models))
    for ax, m in zip(axes, models, strict=True):
        for impl, d in sort_rows(s[s["model"] == m], ["impl", "batch_size"], impl_order(frames)).groupby(
            "impl", sort=False
        ):
            ax.plot(d["batch_size"], d["samples_per_s"], marker="o", label=str(impl))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel("samples/s")
        ax.set_title(f"{m}: {phase} throughput")
        ax.legend(fontsize=7)
    return png_uri(fig)


def fig_accuracy(frames: dict[str, pd.DataFrame]) -> str | None:
    """Test accuracy per epoch, a panel per model, a line per implementation (mean over seeds,
    band min..max) and the course's curve for ``dnn`` (``bench.check.recipes.fig_curves``)."""
    from bench.check.recipes import fig_curves

    acc = frames.get("accuracy")
    if acc is None or acc.empty:
        return None
    return png_uri(fig_curves(acc, impl_order(frames)))


def fig_agreement(frames: dict[str, pd.DataFrame]) -> str | None:
    agr = frames.get("agreement")
    if agr is None or agr.empty:
        return None
    a = agr.copy()
    a["max_rel"] = pd.to_numeric(a["max_rel"], errors="coerce").clip(lower=1e-18).astype(float)
    a["tol"] = pd.to_numeric(a["tol"], errors="coerce")
    keys = list(a.groupby(["model", "dtype"]).groups)
    fig, axes = _subplots(len(keys), width=7.0)
    for ax, (m, dt) in zip(axes, keys, strict=True):
        d = a[(a["model"] == m) & (a["dtype"] == dt)]
        tensors = list(dict.fromkeys(d["phase"].astype(str) + ":" + d["tensor"].astype(str)))
        xpos = {t: i for i, t in enumerate(tensors)}
        finite = d["max_rel"][np.isfinite(d["max_rel"])]
        cap = max(1.0, 10 * float(finite.max())) if len(finite) else 1.0
        for impl, e in sort_rows(d, ["impl"], impl_order(frames)).groupby("impl", sort=False):
            x = (e["phase"].astype(str) + ":" + e["tensor"].astype(str)).map(xpos)
            ok = np.isfinite(e["max_rel"])
            ax.scatter(x[ok], e["max_rel"][ok], s=14, label=str(impl))
            if (~ok).any():  # inf / NaN errors drawn at the cap, so a broken backend is not hidden
                ax.scatter(x[~ok], np.full(int((~ok).sum()), cap), s=30, marker="x", label=f"{impl}: inf/NaN")
        tol = d.groupby(d["phase"].astype(str) + ":" + d["tensor"].astype(str))["tol"].max()
        ax.plot([xpos[t] for t in tol.index], tol.values, "k_", ms=12, label="tolerance")
        ax.set_yscale("log")
        ax.set_xticks(range(len(tensors)))
        ax.set_xticklabels(tensors, rotation=90, fontsize=6)
        ax.set_ylabel("max relative error")
        ax.set_title(f"{m} {dt}: agreement vs NumPy float64")
        ax.legend(fontsize=7)
    return png_uri(fig)


def fig_frac_peak(frames: dict[str, pd.DataFrame]) -> str | None:
    speed = frames.get("speed")
    if speed is None or speed.empty or pd.to_numeric(speed["frac_peak"], errors="coerce").isna().all():
        return None
    s = _largest_batch_train(speed)
    models = list(s["model"].unique())
    fig, axes = _subplots(len(models))
    for ax, m in zip(axes, models, strict=True):
        d = sort_rows(s[s["model"] == m], ["impl"], impl_order(frames))
        ax.bar(d["impl"].astype(str), pd.to_numeric(d["frac_peak"], errors="coerce"))
        ax.set_yscale("log")
        ax.set_ylabel("fraction of measured GEMM peak")
        ax.set_title(f"{m}: {d['phase'].iloc[0]}, batch {int(d['batch_size'].iloc[0])}")
        ax.tick_params(axis="x", rotation=45)
    return png_uri(fig)


FIGURES = (
    ("Speedup against NumPy (green: validated, red: not)", fig_speedup),
    ("Throughput against batch size", fig_throughput),
    ("Test accuracy per epoch (band: min..max over seeds; dashed: the course's dnn)", fig_accuracy),
    ("Agreement error per implementation and tensor", fig_agreement),
    ("Fraction of this machine's measured peak", fig_frac_peak),
)
