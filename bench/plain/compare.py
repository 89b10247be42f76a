"""Harness ``train_step`` vs the plain script's step, same process, interleaved rounds.

    NNBENCH_THREADS=2 python -m bench.plain.compare torch mlp
    NNBENCH_THREADS=2 python -m bench.plain.compare keras cnn

Prints best and median steps/s of both and harness/plain ratios. Run one backend per
process (importing TensorFlow and PyTorch together is slow and skews both).
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from bench.threads import apply_threads

PLAIN = {"torch": "torch_step", "torch-compile": "torch_step", "keras": "keras_step"}


def plain_step(impl: str, preset: str, harness_model: Any) -> tuple[Any, list, Any]:
    """The plain script's (step, batches, module) for what ``harness_model`` runs."""
    import importlib

    mod = importlib.import_module(f"bench.plain.{PLAIN[impl]}")
    mod.set_threads()
    if impl == "keras":
        return mod.make_step(preset, harness_model.train_step_kind), mod.make_batches, mod
    return mod.make_step(preset, compile=impl == "torch-compile"), mod.make_batches, mod


def compare(impl: str, preset: str, steps: int = 20, repeats: int = 7, batch: int = 50) -> dict[str, Any]:
    import implementations
    from bench.params import init_params
    from bench.spec import preset as get_preset
    from implementations.base import one_hot

    spec = get_preset(preset)
    model = implementations.get(impl).build(spec, init_params(spec, 0), "float32")
    pstep, make_batches, mod = plain_step(impl, preset, model)
    rng = np.random.default_rng(0)
    hb = [
        (model.to_device(rng.random((batch, *spec.input_shape), dtype=np.float32)),
         model.to_device(one_hot(rng.integers(0, 10, batch), 10, "float32")))
        for _ in range(10)
    ]  # fmt: skip
    pb = make_batches(batch)

    def harness(n: int) -> float:
        t0 = time.perf_counter()
        for i in range(n):
            model.train_step(*hb[i % len(hb)])
        model.sync()
        return n / (time.perf_counter() - t0)

    t0 = time.perf_counter()
    harness(3)
    warm_h = time.perf_counter() - t0
    t0 = time.perf_counter()
    mod.time_steps(pstep, pb, 3)
    warm_p = time.perf_counter() - t0
    rh, rp = [], []
    for _ in range(repeats):
        rh.append(harness(steps))
        rp.append(mod.time_steps(pstep, pb, steps))
    med = lambda r: sorted(r)[len(r) // 2]  # noqa: E731
    return {
        "impl": impl, "preset": preset, "harness_best": max(rh), "plain_best": max(rp),
        "harness_median": med(rh), "plain_median": med(rp),
        "ratio_best": max(rh) / max(rp), "ratio_median": med(rh) / med(rp),
        "warmup_harness_s": warm_h, "warmup_plain_s": warm_p,
        "compile_seconds": getattr(model, "compile_seconds", None),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("impl", choices=sorted(PLAIN))
    ap.add_argument("presets", nargs="*", default=["mlp", "cnn"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    apply_threads()
    for p in a.presets:
        r = compare(a.impl, p, a.steps, a.repeats)
        print(f"{r['impl']} {p}: harness {r['harness_best']:.1f} / plain {r['plain_best']:.1f} steps/s best "
              f"(ratio {r['ratio_best']:.3f}); medians {r['harness_median']:.1f} / {r['plain_median']:.1f} "
              f"(ratio {r['ratio_median']:.3f}); warm-up {r['warmup_harness_s']:.2f} / {r['warmup_plain_s']:.2f} s"
              + (f"; compile {r['compile_seconds']}" if r["compile_seconds"] else ""))  # fmt: skip


if __name__ == "__main__":
    main()
