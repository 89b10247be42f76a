"""The side tools time through the run's timer: ``bench.measure.probe.microbench`` and
``bench.measure.probe.plain.compare`` call ``bench.measure.timing.Timer.measure`` (spied on here)
and report what it measured."""

from __future__ import annotations

import pytest

from bench.measure.probe import microbench as mb
from bench.measure.timing import Timer
from bench.plan.presets import preset


@pytest.fixture
def measured(monkeypatch):
    """Every ``(name, Measurement)`` that ``Timer.measure`` produced during the test."""
    seen: list = []
    original = Timer.measure

    def spy(self, name, fn, extra_info=None):
        m = original(self, name, fn, extra_info)
        seen.append((name, m))
        return m

    monkeypatch.setattr(Timer, "measure", spy)
    return seen


def test_microbench_train_step_is_timed_by_the_runs_timer(measured):
    t = mb.train_step_time("numpy", preset("tiny-mlp"), "float32", batch=4, repeats=3)
    ((name, m),) = measured
    assert name == "numpy-tiny-mlp-float32-train_step-b4"
    assert m.rounds == 3 and m.warmup_calls == 1 and t == m.median_s > 0


def test_median_time_warms_up_then_times_rounds(measured):
    calls: list[int] = []
    mb.median_time(lambda: calls.append(1), repeats=4, warmup=2, name="noop")
    ((_, m),) = measured
    assert m.rounds == 4 and m.warmup_calls == 2
    assert len(calls) >= 2 + 1 + 4 * m.iterations  # warm-up, at least one probe call, the rounds


def test_plain_compare_alternates_the_runs_timer_on_both_sides(measured):
    pytest.importorskip("torch")
    from bench.measure.probe.plain import compare

    r = compare.compare("torch", "mlp", repeats=2, round_s=0.005)
    names = [n for n, _ in measured]
    assert names == ["harness-torch-mlp-r0", "plain-torch-mlp-r0", "harness-torch-mlp-r1", "plain-torch-mlp-r1"]
    harness = [s for n, m in measured if n.startswith("harness") for s in m.samples_s]
    assert r["harness_best"] == pytest.approx(1 / min(harness))
    assert r["ratio_best"] > 0 and r["ratio_median"] > 0 and r["warmup_harness_s"] > 0
