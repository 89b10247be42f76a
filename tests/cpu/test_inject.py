"""The deliberate-slowdown hook (``bench.measure.inject``) that validates the gate: parsing with clear
errors, a slowed call that really takes ``factor`` times as long (with its negative control,
factor 1), and a run that says it was slowed, in its run.json and at the top of its report."""

from __future__ import annotations

import argparse
import json
import time

import pytest

from bench.measure import inject
from bench.measure.results import RUN_FILE
from bench.report import run_report as report


def test_parse_reads_several_cases():
    assert inject.parse("torch:train_step=1.25, numpy:forward=2") == {
        ("torch", "train_step"): 1.25,
        ("numpy", "forward"): 2.0,
    }
    assert inject.parse("") == {} and inject.parse(None) == {}


@pytest.mark.parametrize(
    "text, says",
    [
        ("torch:train_step", "is not impl:phase=factor"),
        ("torch=1.25", "is not impl:phase=factor"),
        ("torch:train_step=fast", "is not impl:phase=factor"),
        ("torch:train_step=0.8", "must be >= 1"),
        ("torch:train_step=nan", "must be >= 1"),
    ],
)
def test_parse_rejects_malformed_values(text, says):
    with pytest.raises(inject.InjectionError, match=says):
        inject.parse(text)


def _busy(seconds: float):
    def fn():
        until = time.perf_counter() + seconds
        while time.perf_counter() < until:
            pass
        return "out"

    return fn


def _median_time(fn, n: int = 15) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        assert fn() == "out"  # the call's result passes through
        times.append(time.perf_counter() - t0)
    return sorted(times)[n // 2]


def test_slowed_call_takes_factor_times_as_long():
    """A busy-wait proportional to each call's own time: a 2x injection doubles a 2 ms call
    (within scheduling noise); factor 1 is the call itself (negative control)."""
    fn = _busy(0.002)
    assert inject.slowed(fn, 1.0) is fn
    base, slow = _median_time(fn), _median_time(inject.slowed(fn, 2.0))
    assert 1.7 < slow / base < 2.6, (base, slow)


def test_run_records_injection_and_rejects_malformed(tmp_path, monkeypatch):
    """run.json carries the injection, so every report and the gate can say so; a malformed
    value stops the run before it starts."""
    from bench import run
    from bench.core import threads

    # create_run applies the thread count to this process's environment, BLAS and Numba:
    # keep it from leaking into the tests that run after this one
    monkeypatch.setattr(threads, "apply_threads", lambda n=None: n or 1)
    ns = argparse.Namespace(
        models="tiny-mlp", impls="numpy", dtype=None, profile="quick", out=str(tmp_path), resume=None,
        threads=1, data_dir=None, timeout=None, no_report=True, gate=None,
    )  # fmt: skip
    monkeypatch.setenv(inject.ENV, "torch:train_step=oops")
    with pytest.raises(run.RunError, match="is not impl:phase=factor"):
        run.create_run(ns)
    monkeypatch.setenv(inject.ENV, "torch:train_step=1.25")
    run_dir = run.create_run(ns)
    meta = json.loads((run_dir / RUN_FILE).read_text())
    assert meta["injected_slowdown"] == "torch:train_step=1.25"


def test_report_says_injected_before_anything_else():
    lines = report.injection_lines("torch:train_step=1.25")
    assert "Injected slowdown" in lines[0] and "not a measurement" in lines[0]
    assert report.injection_lines(None) == []  # negative control: a plain run says nothing
