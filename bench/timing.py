"""Timing through pytest-benchmark's machinery, outside a pytest session.

``Timer.measure(name, fn)`` runs ``fn`` in a ``pytest_benchmark.fixture.BenchmarkFixture`` in
pedantic mode: ``warmup_rounds`` untimed rounds, then ``rounds`` timed rounds of ``iterations``
calls each (pytest-benchmark divides a round's time by its iterations). We choose iterations and
rounds ourselves from one probe call, so that a slow backend (pure Python: seconds per call) is not
called dozens of times by the fixture's own calibration: iterations make one round last at least
``round_min_s``; rounds fill ``target_s`` within ``[min_rounds, max_rounds]``.

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
    probe_s: float

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
        """Probe once (untimed by the fixture), then warm-up and timed rounds of ``fn``."""
        from pytest_benchmark.fixture import BenchmarkFixture
        from pytest_benchmark.utils import NameWrapper

        t0 = time.perf_counter()
        fn()
        probe_s = time.perf_counter() - t0
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
        fixture.pedantic(fn, rounds=rounds, warmup_rounds=self.config.warmup_rounds, iterations=iterations)
        data = list(fixture.stats.stats.data)
        return Measurement(name, rounds, iterations, data, probe_s)

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
