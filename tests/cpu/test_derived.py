"""Derived speed columns (``bench.measure.derived``): one implementation, written by the run and filled
by the report's loader where a record lacks them."""

from __future__ import annotations

import copy
import math

import pytest

from bench.measure.derived import DERIVED_COLUMNS, fill_derived
from bench.measure.frames import frames_from_records
from bench.measure.results import make_record


def speed(impl: str, median: float, batch: int = 50, process: int = 0, phase: str = "forward") -> dict:
    skips = 2.3 if impl == "torch" else 1.0  # as if torch performed 2.3x fewer FLOPs than the model's count
    return make_record("speed", impl=impl, model="mlp", dtype="float32", phase=phase, batch_size=batch,
                       median_s=median, gflops=batch / median / 1e3, gflops_model=skips * batch / median / 1e3,
                       process=process, bytes=6_000_000, working_set_bytes=4_000_000)  # fmt: skip


def records() -> list[dict]:
    """numpy and torch at batch 50 over 3 processes, pure Python at batch 1, two peak GEMMs."""
    recs = [speed("numpy", m, process=k) for k, m in enumerate((0.010, 0.012, 0.011))]
    recs += [speed("torch", m, process=k) for k, m in enumerate((0.004, 0.005, 0.009))]
    recs += [speed("pure_python", 0.1, batch=1), speed("numpy", 0.001, batch=1, phase="train_step")]
    peaks = ((90.0, "before"), (100.0, "after"))
    recs += [make_record("peak", impl="numpy", dtype="float32", gflops=g, when=w) for g, w in peaks]
    roofs = (("L2", 1 << 20, 80.0), ("LLC", 32 << 20, 60.0))
    recs += [make_record("bandwidth", impl="numpy", dtype="float64", level=lv, kernel="triad", threads=1,
                         cache_bytes=c, gbps=g, when="before") for lv, c, g in roofs]  # fmt: skip
    return recs


def test_fill_derived_case_medians():
    out = fill_derived(records())
    torch = [r for r in out if r["kind"] == "speed" and r["impl"] == "torch"]
    # the case's rate is its batch over the median of process medians (0.005 against numpy's 0.011)
    assert [r["speedup_vs_numpy"] for r in torch] == [pytest.approx(0.011 / 0.005)] * 3
    # against pure Python's per-sample rate at batch 1 (10/s)
    assert torch[0]["x_vs_pure_python_b1"] == pytest.approx((50 / 0.005) / 10)
    assert torch[0]["samples_per_s"] == pytest.approx(50 / 0.004)  # per record
    assert torch[0]["frac_peak"] == pytest.approx(torch[0]["gflops"] / 100.0)  # the best peak
    assert torch[0]["frac_peak_model"] == pytest.approx(2.3 * torch[0]["frac_peak"])  # the effective rate
    lone = next(r for r in out if r["phase"] == "train_step")
    assert lone["speedup_vs_numpy"] == pytest.approx(1.0) and lone["x_vs_pure_python_b1"] is None


def test_report_loader_fills_exactly_what_the_run_writes():
    """A run cut short before its end has no derived columns: the loader fills them with the
    run's own values (one implementation, not a second one that could drift)."""
    written = fill_derived(records())
    frames = frames_from_records(records(), {"run_id": "r"})
    loaded = frames["speed"]
    want = [r for r in written if r["kind"] == "speed"]
    assert len(loaded) == len(want)
    for col in DERIVED_COLUMNS:
        for got, r in zip(loaded[col], want, strict=True):
            missing = got is None or (isinstance(got, float) and math.isnan(got))
            assert (missing and r[col] is None) or got == pytest.approx(r[col]), (col, r["impl"])
    assert loaded["bound"].notna().all() and loaded["x_of_limit"].notna().all()  # the roofline too


def test_report_loader_keeps_what_the_run_wrote():
    recs = fill_derived(records())
    stored = copy.deepcopy(recs)
    stored[0]["speedup_vs_numpy"] = 123.0  # as written by the run (e.g. an older definition)
    stored[1]["speedup_vs_numpy"] = None  # lacking: filled
    loaded = frames_from_records(stored, {})["speed"]
    assert loaded["speedup_vs_numpy"][0] == 123.0
    assert loaded["speedup_vs_numpy"][1] == pytest.approx(recs[1]["speedup_vs_numpy"])
    assert stored[1]["speedup_vs_numpy"] is None  # the caller's records are not changed
