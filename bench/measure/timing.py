"""Timing through pytest-benchmark's machinery, outside a pytest session.

``Timer.measure(name, fn)`` first calls ``fn`` ``warmup_rounds`` times untimed (at least once: the
first call at a new batch size can retrace or recompile: ``tf.function``, ``torch.compile``, a
Numba kernel's first parallel launch), then calibrates from the fastest of a few timed probe
calls (``probe_calls``, stopping early once ``round_min_s`` has passed), then runs ``fn`` in a
``pytest_benchmark.fixture.BenchmarkFixture`` in pedantic mode: ``rounds`` timed rounds of
``iterations`` calls each (pytest-benchmark divides a round's time by its iterations). We choose
iterations and rounds ourselves, so that a slow backend (pure Python: seconds per call) is not
called dozens of times by the fixture's own calibration: iterations make one round last at least
``round_min_s``; rounds fill ``target_s`` within ``[min_rounds, max_rounds]``. Because the
calibration follows the warm-up, a slow first call can no longer shrink a case to a handful of
rounds: every case ends with at least ``min_rounds``.

``Timer.save_json(path)`` writes the same JSON file ``pytest --benchmark-json`` writes
(machine_info, commit_info, benchmarks with per-round ``data``).
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any


@dataclass(frozen=True)
class TimingConfig:
    warmup_rounds: int = 2
    min_rounds: int = 5
    max_rounds: int = 200
    round_min_s: float = 0.002
    target_s: float = 1.0
    probe_calls: int = 3

    @classmethod
    def from_profile(cls, speed: dict[str, Any]) -> TimingConfig:
        keys = cls.__dataclass_fields__
        return cls(**{k: type(getattr(cls, k))(v) for k, v in speed.items() if k in keys})

    def plan(self, probe_s: float) -> tuple[int, int]:
        """(iterations, rounds) for a callable whose single call took ``probe_s``."""
        probe_s = max(probe_s, 1e-7)
        iterations = max(1, math.ceil(self.round_min_s / probe_s))
        per_round = probe_s * iterations
        rounds = min(self.max_rounds, max(self.min_rounds, math.ceil(self.target_s / per_round)))
        return iterations, rounds


@dataclass
class Measurement:
    name: str
    rounds: int
    iterations: int
    samples_s: list[float]  # per-round time per call (round time / iterations)
    probe_s: float  # the calibration probe: fastest of the probe calls, after the warm-up
    warmup_calls: int = 0  # untimed calls before the probe

    @property
    def median_s(self) -> float:
        return statistics.median(self.samples_s)

    @property
    def iqr_s(self) -> float:
        if len(self.samples_s) < 2:
            return 0.0
        q = statistics.quantiles(self.samples_s, n=4, method="inclusive")
        return q[2] - q[0]

    @property
    def mean_s(self) -> float:
        return statistics.fmean(self.samples_s)

    @property
    def min_s(self) -> float:
        return min(self.samples_s)


class _Logger:
    def debug(self, *a: Any, **k: Any) -> None:
        pass

    info = warning = error = debug


class Timer:
    """Collects pytest-benchmark ``Metadata`` objects for one worker and writes their JSON."""

    def __init__(self, config: TimingConfig, group: str = "nnbench"):
        self.config = config
        self.group = group
        self.benchmarks: list[Any] = []

    def measure(self, name: str, fn: Callable[[], Any], extra_info: dict[str, Any] | None = None) -> Measurement:
        """Untimed warm-up calls, a calibration probe, then the timed rounds of ``fn``."""
        from pytest_benchmark.fixture import BenchmarkFixture
        from pytest_benchmark.utils import NameWrapper

        warmup_calls = max(1, self.config.warmup_rounds)
        for _ in range(warmup_calls):
            fn()
        probe_s = self.probe(fn)
        iterations, rounds = self.config.plan(probe_s)
        node = SimpleNamespace(name=name, nodeid=f"nnbench::{name}")
        fixture = BenchmarkFixture(
            node,
            disable_gc=False,
            timer=NameWrapper(time.perf_counter),
            min_rounds=self.config.min_rounds,
            min_time=self.config.round_min_s,
            max_time=self.config.target_s,
            precision=None,
            confidence=None,
            warmup=self.config.warmup_rounds > 0,
            warmup_iterations=self.config.warmup_rounds,
            calibration_precision=10,
            add_stats=self.benchmarks.append,
            logger=_Logger(),
            warner=lambda *a, **k: None,
            disabled=False,
            cprofile=False,
            cprofile_loops=None,
            cprofile_dump=None,
            group=self.group,
        )
        fixture.extra_info.update(extra_info or {})
        fixture.pedantic(fn, rounds=rounds, warmup_rounds=0, iterations=iterations)  # warmed up above
        data = list(fixture.stats.stats.data)
        return Measurement(name, rounds, iterations, data, probe_s, warmup_calls)

    def probe(self, fn: Callable[[], Any]) -> float:
        """Fastest of up to ``probe_calls`` timed calls; stops once ``round_min_s`` has passed
        (a slow backend is not called more than needed to size its rounds)."""
        best, spent = math.inf, 0.0
        for _ in range(max(1, self.config.probe_calls)):
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            best, spent = min(best, dt), spent + dt
            if spent >= self.config.round_min_s:
                break
        return best

    def as_json(self) -> dict[str, Any]:
        """The ``--benchmark-json`` document."""
        from pytest_benchmark import __version__
        from pytest_benchmark.plugin import pytest_benchmark_generate_machine_info
        from pytest_benchmark.utils import get_commit_info

        return {
            "machine_info": pytest_benchmark_generate_machine_info(),
            "commit_info": get_commit_info(),
            "benchmarks": [b.as_dict(include_data=True) for b in self.benchmarks],
            "datetime": datetime.now(UTC).isoformat(),
            "version": __version__,
        }

    def save_json(self, path: str) -> None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.as_json(), f, indent=2, default=str)
