"""Harness ``train_step`` vs the plain script's step, same process, interleaved rounds.

    NNBENCH_THREADS=2 python -m bench.measure.probe.plain.compare torch mlp
    NNBENCH_THREADS=2 python -m bench.measure.probe.plain.compare keras cnn

Both sides are timed by the run's own timer, ``bench.measure.timing.Timer``, alternately: ``repeats``
times, one measurement of the harness step (``train_step`` then ``sync()``, the callable the
worker times) and one of the plain step, each a warm-up call, a calibration probe and one
timed round of at least ``round_s`` seconds, so machine noise hits both alike. Prints best and
median steps/s of both and harness/plain ratios. The first three steps of each side are timed
apart, once (``warmup_*_s``: tracing / compilation; a single-shot cold time, not a rate).
Run one backend per process (importing TensorFlow and PyTorch together is slow and skews
both).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from typing import Any

import numpy as np

from bench.core.threads import apply_threads
from bench.measure.timing import Timer, TimingConfig

PLAIN = {"torch": "torch_step", "torch-compile": "torch_step", "keras": "keras_step"}


def plain_step(impl: str, preset: str, harness_model: Any) -> tuple[Any, list, Any]:
    """The plain script's (step, batches, module) for what ``harness_model`` runs."""
    import importlib

    mod = importlib.import_module(f"bench.measure.probe.plain.{PLAIN[impl]}")
    mod.set_threads()
    if impl == "keras":
        return mod.make_step(preset, harness_model.train_step_kind), mod.make_batches, mod
    return mod.make_step(preset, compile=impl == "torch-compile"), mod.make_batches, mod


def first_calls_s(fn: Any, n: int = 3) -> float:
    """Seconds of the first ``n`` calls of a fresh step (tracing / compiling included)."""
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - t0


def compare(impl: str, preset: str, repeats: int = 7, batch: int = 50, round_s: float = 0.2) -> dict[str, Any]:
    from bench.core.model import one_hot
    from bench.core.params import init_params
    from bench.plan import backends
    from bench.plan.presets import preset as get_preset

    spec = get_preset(preset)
    model = backends.get(impl).build(spec, init_params(spec, 0), "float32")
    pstep, make_batches, _ = plain_step(impl, preset, model)
    rng = np.random.default_rng(0)
    hb = itertools.cycle([
        (model.to_device(rng.random((batch, *spec.input_shape), dtype=np.float32)),
         model.to_device(one_hot(rng.integers(0, 10, batch), 10, "float32")))
        for _ in range(10)
    ])  # fmt: skip
    pb = itertools.cycle(make_batches(batch))
    fns = {
        "harness": lambda: (model.train_step(*next(hb)), model.sync()),
        "plain": lambda: pstep(*next(pb)),
    }
    warm = {side: first_calls_s(fn) for side, fn in fns.items()}
    config = TimingConfig(warmup_rounds=1, min_rounds=1, max_rounds=1, round_min_s=round_s, target_s=0.0)
    timer = Timer(config, group=f"plain-compare/{impl}/{preset}")
    samples: dict[str, list[float]] = {side: [] for side in fns}  # seconds per step, one per round
    for r in range(repeats):
        for side, fn in fns.items():
            samples[side] += timer.measure(f"{side}-{impl}-{preset}-r{r}", fn).samples_s
    best = {side: 1 / min(s) for side, s in samples.items()}  # steps/s
    med = {side: 1 / statistics.median(s) for side, s in samples.items()}
    return {
        "impl": impl, "preset": preset, "harness_best": best["harness"], "plain_best": best["plain"],
        "harness_median": med["harness"], "plain_median": med["plain"],
        "ratio_best": best["harness"] / best["plain"], "ratio_median": med["harness"] / med["plain"],
        "warmup_harness_s": warm["harness"], "warmup_plain_s": warm["plain"],
        "compile_seconds": getattr(model, "compile_seconds", None),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("impl", choices=sorted(PLAIN))
    ap.add_argument("presets", nargs="*", default=["mlp", "cnn"])
    ap.add_argument("--repeats", type=int, default=7, help="timed rounds per side, alternating")
    ap.add_argument("--round-s", type=float, default=0.2, help="minimum seconds of one timed round")
    a = ap.parse_args()
    apply_threads()
    for p in a.presets:
        r = compare(a.impl, p, a.repeats, round_s=a.round_s)
        print(f"{r['impl']} {p}: harness {r['harness_best']:.1f} / plain {r['plain_best']:.1f} steps/s best "
              f"(ratio {r['ratio_best']:.3f}); medians {r['harness_median']:.1f} / {r['plain_median']:.1f} "
              f"(ratio {r['ratio_median']:.3f}); warm-up {r['warmup_harness_s']:.2f} / {r['warmup_plain_s']:.2f} s"
              + (f"; compile {r['compile_seconds']}" if r["compile_seconds"] else ""))  # fmt: skip


if __name__ == "__main__":
    main()
