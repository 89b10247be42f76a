"""Derived speed columns, computed from the run's own records: the one implementation.

The run fills them into ``results.jsonl`` at its end (``bench.run``, ``overwrite=True``: a resumed
run with more speed processes changes a case's median). The report's loader (``bench.measure.frames``)
fills only what a record lacks (a run interrupted before its end), so the figures a run wrote are
read back as written.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from bench.plan.sides import same_side

DERIVED_COLUMNS = (
    "samples_per_s",
    "speedup_vs_numpy",
    "x_vs_pure_python_b1",
    "frac_peak",
    "frac_peak_model",
    "limit_s",
    "bound",
    "x_of_limit",
)
LEVELS = ("L2", "LLC", "DRAM")  # bench.measure.probe.stream's levels, smallest first
ROOF_KERNEL = "triad"  # the bandwidth a training step's mix of reads and writes is held to


def fill_derived(records: list[dict[str, Any]], overwrite: bool = True) -> list[dict[str, Any]]:
    """Fill ``DERIVED_COLUMNS`` of every speed record (in place; returns ``records``).

    ``samples_per_s`` is the record's batch over its median. The ratios compare per-sample
    throughput (samples/s over the reference's, same model, dtype, phase and run):
    ``speedup_vs_numpy`` against NumPy at the same batch size; ``x_vs_pure_python_b1`` against
    pure Python at batch 1, whatever this case's batch (pure Python is timed at batch 1 in every
    profile; a batch of 50 gains from vectorising that its batch 1 cannot, which is part of what
    the column shows). With several speed processes per case, the ratios use the case's median
    of process medians. ``frac_peak`` (per record) is the GFLOP/s over the run's best peak GEMM in
    the case's dtype (float64 cases against the float64 GEMM): the share of the machine's GEMM rate
    the implementation's own work runs at. ``frac_peak_model`` is the same with ``gflops_model``,
    the model's direct FLOP count per second: an effective rate that compares implementations by
    time (Numba's Winograd convolutions perform ~2.3x fewer FLOPs than the direct count, so their
    effective rate can pass 100 %). Without ``overwrite``, a value a record already has is kept."""
    medians: dict[tuple[Any, ...], list[float]] = {}
    for r in records:
        if r.get("kind") == "speed" and _positive(r.get("median_s")):
            medians.setdefault((r["impl"], r["model"], r["dtype"], r["phase"], r["batch_size"]), []).append(
                r["median_s"]
            )
    # a case's rate: its batch over the median of its process medians (what the gate judges)
    rate = {k: k[4] / statistics.median(v) for k, v in medians.items()}
    peak = peak_by_dtype(records)
    roofs = memory_roofs(records)
    for r in records:
        if r.get("kind") != "speed" or not _positive(r.get("median_s")):
            continue
        key = (r["model"], r["dtype"], r["phase"])
        sps = rate[(r["impl"], *key, r["batch_size"])]
        numpy_rate = rate.get((same_side("numpy", r["impl"]), *key, r["batch_size"]))  # its own side's (A/B run)
        pp_rate = rate.get((same_side("pure_python", r["impl"]), *key, 1))
        p = peak.get(r.get("dtype") or "float32")
        gflops, gflops_model = r.get("gflops"), r.get("gflops_model")
        values = {
            "samples_per_s": r["batch_size"] / r["median_s"],
            "speedup_vs_numpy": sps / numpy_rate if numpy_rate else None,
            "x_vs_pure_python_b1": sps / pp_rate if pp_rate else None,
            "frac_peak": gflops / p if p and isinstance(gflops, int | float) else None,
            "frac_peak_model": gflops_model / p if p and isinstance(gflops_model, int | float) else None,
        }
        values |= roofline(r, p, roofs)
        for col, v in values.items():
            if overwrite or _missing(r.get(col)):
                r[col] = v
    return records


def peak_by_dtype(records: list[dict[str, Any]]) -> dict[str, float]:
    """The run's GEMM peak per dtype: the best of its peak measurements (before and after; a run
    from before per-dtype peaks has float32 only)."""
    out: dict[str, float] = {}
    for r in records:
        if r.get("kind") == "peak" and _positive(r.get("gflops")):
            d = r.get("dtype") or "float32"
            out[d] = max(out.get(d, 0.0), float(r["gflops"]))
    return out


def memory_roofs(records: list[dict[str, Any]]) -> dict[str, tuple[float, float]]:
    """Per memory level, (GB/s, the level's size in bytes): the best ``ROOF_KERNEL`` bandwidth of
    the run (before and after) at the most threads it measured (the cases' count); the size of
    DRAM is infinite."""
    bw = [
        r
        for r in records
        if r.get("kind") == "bandwidth" and r.get("kernel") == ROOF_KERNEL and _positive(r.get("gbps"))
    ]
    if not bw:
        return {}
    threads = max(int(r.get("threads") or 1) for r in bw)
    out: dict[str, tuple[float, float]] = {}
    for r in bw:
        if int(r.get("threads") or 1) == threads and r.get("level") in LEVELS:
            size = float(r["cache_bytes"]) if _positive(r.get("cache_bytes")) and r["level"] != "DRAM" else math.inf
            out[r["level"]] = (max(out.get(r["level"], (0.0, size))[0], float(r["gbps"])), size)
    return out


def roofline(r: dict[str, Any], peak: float | None, roofs: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """The roofline's bound of one speed record (Williams, Waterman and Patterson):
    ``limit_s = max(model FLOPs / GEMM peak, bytes / bandwidth)``, the bandwidth that of the
    smallest memory level the phase's working set fits in; ``bound`` names the binding term and
    ``x_of_limit = limit_s / median_s`` (1: at the machine's limit). The model's direct FLOP count
    is the compute term, the same for every implementation, so an algorithm that performs fewer
    FLOPs (Numba's Winograd) or a pass fewer than ``spec.traffic`` counts can pass 1. Empty when
    the record has no byte count (a GPU case) or the run measured no roofs."""
    none = {"limit_s": None, "bound": None, "x_of_limit": None}
    nbytes, ws, gfm = r.get("bytes"), r.get("working_set_bytes"), r.get("gflops_model")
    if not (peak and roofs and _positive(nbytes) and _positive(gfm)):
        return none
    level = next((lv for lv in LEVELS if lv in roofs and (ws or math.inf) <= roofs[lv][1]), None)
    level = level or max(roofs, key=lambda lv: roofs[lv][1])  # the biggest level measured
    compute_s = gfm * r["median_s"] / peak  # model FLOPs / (GFLOP/s): gflops_model x median_s = GFLOPs
    memory_s = nbytes / (roofs[level][0] * 1e9)
    limit = max(compute_s, memory_s)
    return {
        "limit_s": limit,
        "bound": "compute" if compute_s >= memory_s else f"memory ({level})",
        "x_of_limit": limit / r["median_s"],
    }


def _positive(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v > 0  # NaN > 0 is False


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))
