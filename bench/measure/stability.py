"""How far a run's speed figures can be trusted: one row per speed case, with flags.

A speed case ``(impl, model, dtype, phase, batch_size)`` is measured in P worker processes
(``process`` 0..P-1 in its records). Its figure is the median of the process medians (the gate
judges the fastest process instead: ``bench.judge.compare.center``). A case is flagged, with the reason, when

- the figure hangs on one process: leaving any one process out moves the median of the
  process medians by more than ``LOO_LIMIT`` (max / min of those leave-one-out medians, column
  ``median_moves``). ``process_spread`` (max / min of the process medians) is shown beside it.
  Why not flag on ``process_spread`` itself: on this machine the noise is one-sided (a
  disturbed process is slower, never faster), and max / min grows with P: with 3 processes it
  flagged 23 % of the train_step cases of 40 real quick runs, and 8 and 11 of 33 in the two
  standard runs of 2026-11-24 (5 and 7 processes), though more processes make the median
  *more* trustworthy. The leave-one-out range shrinks as P grows and ignores one slow process
  out of five, yet flags two out of five (then the median sits between the modes). Simulated
  with normal process noise of sd 6 %, max / min > 1.15 flags 23 / 46 / 64 % of cases at
  P = 3 / 5 / 7 and this rule 48 / 14 / 3 %: stricter than the old one at P = 3, looser at 5+;
- the rounds within a process vary: the median over processes of the rounds' robust
  coefficient of variation (interquartile range / median, blind to the odd outlier round)
  exceeds ``CV_LIMIT``;
- the machine was busy: the 1-minute load average sampled while the case was measured
  exceeded ``LOAD_LIMIT`` times the usable cores (the run's threads count themselves);
- fewer than ``MIN_ROUNDS`` rounds were timed in a process, or fewer processes ran than the
  profile asked for. Pure Python is exempt from these two: its profiles time it in one
  process with a handful of rounds on purpose (seconds per call), so neither they nor the
  rounds' spread (an IQR of 2-5 values) are judged; its figures are indicative.

A run is unstable when any ``train_step`` case is flagged, the GEMM peak moved more than
``PEAK_DRIFT_LIMIT`` or a memory roof (the triad bandwidth of a level,
``bench.measure.probe.stream``) more than ``BANDWIDTH_DRIFT_LIMIT`` between before and after the
cases; its summary says so at the top and asks for a repeat.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

LOO_LIMIT = 1.05
CV_LIMIT = 0.10
LOAD_LIMIT = 1.5
MIN_ROUNDS = 5
PEAK_DRIFT_LIMIT = 1.15
BANDWIDTH_DRIFT_LIMIT = 1.25  # a cache's bandwidth on a shared machine moves more than the GEMM's
CASE = ["impl", "model", "dtype", "phase", "batch_size"]


def _cv(samples: Any) -> float:
    a = np.asarray(samples if isinstance(samples, (list, tuple, np.ndarray)) else [], dtype=float)
    a = a[np.isfinite(a)]
    if len(a) < 2 or np.median(a) <= 0:
        return math.nan
    q1, q3 = np.percentile(a, [25, 75])
    return float((q3 - q1) / np.median(a))


def case_table(speed: pd.DataFrame, cores: int | None = None, processes: int | None = None) -> pd.DataFrame:
    """One row per speed case: the median of process medians, the spread between processes,
    the rounds' CV, the load while measuring, and ``stable`` / ``flags``."""
    df = speed.copy()
    df["process"] = pd.to_numeric(df["process"], errors="coerce").fillna(0) if "process" in df else 0
    df = df.drop_duplicates(CASE + ["process"], keep="last")
    df["median_s"] = pd.to_numeric(df["median_s"], errors="coerce")
    df["cv"] = df["samples_s"].map(_cv) if "samples_s" in df else math.nan
    df["load"] = pd.to_numeric(df["loadavg"], errors="coerce") if "loadavg" in df else math.nan
    df["rounds"] = pd.to_numeric(df["rounds"], errors="coerce")
    if processes is None:  # the run's P: the most processes any case (pure Python aside) got
        timed = df[df["impl"] != "pure_python"].groupby(CASE, dropna=False).size()
        processes = int(timed.max()) if len(timed) else None
    rows = []
    for key, g in df.groupby(CASE, dropna=False, sort=False):
        med = g["median_s"].dropna()
        row = dict(zip(CASE, key, strict=True))
        row["processes"] = int(len(g))
        row["median_s"] = float(med.median()) if len(med) else math.nan
        row["process_spread"] = float(med.max() / med.min()) if len(med) and med.min() > 0 else math.nan
        row["median_moves"] = _median_moves(med.to_numpy())
        row["rounds_cv"] = float(g["cv"].median())
        row["min_rounds"] = int(g["rounds"].min()) if g["rounds"].notna().any() else 0
        row["max_load"] = float(g["load"].max()) if g["load"].notna().any() else math.nan
        row["flags"] = "; ".join(case_flags(row, cores, processes))
        row["stable"] = not row["flags"]
        rows.append(row)
    return pd.DataFrame(rows)


def _median_moves(medians: np.ndarray) -> float:
    """max / min of the median over the process medians with each one process left out
    (1.0 with fewer than two processes: the count flag speaks for those)."""
    m = medians[np.isfinite(medians)]
    if len(m) < 2 or m.min() <= 0:
        return 1.0 if len(m) else math.nan
    loo = [float(np.median(np.delete(m, i))) for i in range(len(m))]
    return max(loo) / min(loo)


def case_flags(row: dict[str, Any], cores: int | None, processes: int | None) -> list[str]:
    """The reasons a case's figure is shaky (empty: stable)."""
    out = []
    if row["median_moves"] > LOO_LIMIT:
        out.append(
            f"process medians spread {row['process_spread']:.2f}x: leaving one out moves the median "
            f"{row['median_moves']:.2f}x (> {LOO_LIMIT})"
        )
    if cores and row["max_load"] > LOAD_LIMIT * cores:
        out.append(f"machine busy: load {row['max_load']:.1f} on {cores} cores")
    if row["impl"] == "pure_python":  # 2-5 rounds by design: an IQR of so few says nothing
        return out
    if row["rounds_cv"] > CV_LIMIT:
        out.append(f"rounds vary: IQR/median {row['rounds_cv']:.0%} (> {CV_LIMIT:.0%})")
    if row["min_rounds"] < MIN_ROUNDS:
        out.append(f"only {row['min_rounds']} rounds in a process (< {MIN_ROUNDS})")
    if processes and row["processes"] < processes:
        out.append(f"{row['processes']} of {processes} processes measured")
    return out


def peak_drift(peak: pd.DataFrame | None) -> dict[str, float]:
    """Per dtype, max / min of the GEMM peak measured before and after the cases."""
    if peak is None or peak.empty:
        return {}
    g = pd.to_numeric(peak["gflops"], errors="coerce")
    dt = peak["dtype"].fillna("float32") if "dtype" in peak else pd.Series("float32", index=peak.index)
    out = {}
    for d, v in g.groupby(dt):
        v = v.dropna()
        if len(v) > 1 and v.min() > 0:
            out[str(d)] = float(v.max() / v.min())
    return out


def bandwidth_drift(bw: pd.DataFrame | None, kernel: str = "triad") -> dict[str, float]:
    """Per (level, threads) of ``kernel``, max / min of the bandwidth before and after the cases."""
    if bw is None or bw.empty:
        return {}
    bw = bw[bw["kernel"] == kernel]
    g = pd.to_numeric(bw["gbps"], errors="coerce")
    out = {}
    for (level, threads), v in g.groupby([bw["level"], bw["threads"]]):
        v = v.dropna()
        if len(v) > 1 and v.min() > 0:
            out[f"{level} {kernel} at {threads} thread(s)"] = float(v.max() / v.min())
    return out


def run_verdict(
    cases: pd.DataFrame,
    peak: pd.DataFrame | None,
    bandwidth: pd.DataFrame | None = None,
    binding: set[str] | None = None,
) -> tuple[bool, list[str]]:
    """(stable, reasons): unstable when a train_step case is flagged or the peak or a memory
    roof moved; ``binding``: the memory levels some case is bound by (``bound`` of the speed
    records), the only roofs whose drift moves a figure (None: every level)."""
    reasons = []
    if len(cases):
        bad = cases[(cases["phase"] == "train_step") & ~cases["stable"]]
        for r in bad.itertuples(index=False):
            reasons.append(f"{r.impl} {r.model} {r.dtype} train_step b={r.batch_size}: {r.flags}")
    for d, drift in peak_drift(peak).items():
        if drift > PEAK_DRIFT_LIMIT:
            reasons.append(f"{d} GEMM peak moved {drift:.2f}x between before and after the cases")
    for what, drift in bandwidth_drift(bandwidth).items():
        if drift > BANDWIDTH_DRIFT_LIMIT and (binding is None or what.split()[0] in binding):
            reasons.append(f"{what} bandwidth moved {drift:.2f}x between before and after the cases")
    return not reasons, reasons
