"""Derived speed columns, computed from the run's own records.

``fill_derived`` is what the run writes into ``results.jsonl`` at its end.
"""

from __future__ import annotations

import statistics
from typing import Any


def fill_derived(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Speedups as per-sample throughput ratios (samples/s over the reference's, same model,
    dtype, phase and run) and the fraction of the run's measured peak in the case's dtype
    (GFLOP/s over the best peak GEMM's GFLOP/s; float64 cases against the float64 GEMM).
    Against numpy the batch size is the same. Pure Python is timed at small batches only (its
    per-sample cost does not depend on the batch), so when it lacks the batch size its best
    throughput for that phase is the reference. With several speed processes per case, the
    speedups use the case's median of process medians; ``frac_peak`` stays per record."""
    medians: dict[tuple[Any, ...], list[float]] = {}
    for r in records:
        if r.get("kind") == "speed" and r.get("median_s"):
            medians.setdefault((r["impl"], r["model"], r["dtype"], r["phase"], r["batch_size"]), []).append(
                r["median_s"]
            )
    # a case's rate: its batch over the median of its process medians (what the gate judges)
    rate = {k: k[4] / statistics.median(v) for k, v in medians.items()}
    best: dict[tuple[Any, ...], float] = {}
    for k, sps in rate.items():
        best[k[:4]] = max(best.get(k[:4], 0.0), sps)
    peak = peak_by_dtype(records)
    for r in records:
        if r.get("kind") != "speed" or not r.get("median_s"):
            continue
        key = (r["model"], r["dtype"], r["phase"])
        sps = rate[(r["impl"], *key, r["batch_size"])]
        numpy_rate = rate.get(("numpy", *key, r["batch_size"]))
        r["speedup_vs_numpy"] = sps / numpy_rate if numpy_rate else None
        pp_rate = rate.get(("pure_python", *key, r["batch_size"])) or best.get(("pure_python", *key))
        r["speedup_vs_pure_python"] = sps / pp_rate if pp_rate else None
        p = peak.get(r["dtype"])
        r["frac_peak"] = r["gflops"] / p if p and r.get("gflops") is not None else None
    return records


def peak_by_dtype(records: list[dict[str, Any]]) -> dict[str, float]:
    """The run's GEMM peak per dtype: the best of its peak measurements (before and after)."""
    out: dict[str, float] = {}
    for r in records:
        if r.get("kind") == "peak" and r.get("gflops"):
            d = r.get("dtype") or "float32"
            out[d] = max(out.get(d, 0.0), float(r["gflops"]))
    return out
