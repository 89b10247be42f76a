"""Deliberate slowdowns, to prove that the gate catches them (``NNBENCH_INJECT_SLOWDOWN``).

``NNBENCH_INJECT_SLOWDOWN="torch:train_step=1.25"`` (comma-separated ``impl:phase=factor``)
makes every timed call of that phase take ``factor`` times as long: the call runs as usual,
then the worker busy-waits for ``(factor - 1)`` times the call's own duration, so the
slowdown follows the call's noise the way a real regression would, and the CPU stays busy
(a sleep would free the core for the other thread). Warm-up and calibration calls are
slowed too: the timer sees one slower callable, as it would after a bad commit.

The run records the injection in ``run.json`` (``injected_slowdown``) and every report says
so at the top: a run with an injection must never be mistaken for a measurement.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

ENV = "NNBENCH_INJECT_SLOWDOWN"


class InjectionError(ValueError):
    """A malformed ``NNBENCH_INJECT_SLOWDOWN``."""


def parse(text: str | None) -> dict[tuple[str, str], float]:
    """``"torch:train_step=1.25,numpy:forward=2"`` -> ``{("torch", "train_step"): 1.25, ...}``."""
    out: dict[tuple[str, str], float] = {}
    for item in (text or "").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            case, factor = item.split("=")
            impl, phase = case.split(":")
            f = float(factor)
        except ValueError:
            raise InjectionError(f"{ENV}: {item!r} is not impl:phase=factor (e.g. torch:train_step=1.25)") from None
        if not f >= 1.0:
            raise InjectionError(f"{ENV}: factor {f} in {item!r} must be >= 1 (a slowdown)")
        out[impl.strip(), phase.strip()] = f
    return out


def slowed(fn: Callable[[], Any], factor: float) -> Callable[[], Any]:
    """``fn`` made ``factor`` times slower by a busy-wait proportional to each call's time."""
    if factor == 1.0:
        return fn

    def call() -> Any:
        t0 = time.perf_counter()
        out = fn()
        until = t0 + factor * (time.perf_counter() - t0)
        while time.perf_counter() < until:
            pass
        return out

    return call
