"""Microbenchmarks of the pure_python and numba backends, each ratio taken in one process.

    python -m bench.measure.probe.microbench pure_python   # MLP step MAC rate vs plain dot rate
    python -m bench.measure.probe.microbench numba         # numba vs numpy train_step, batch 50
    python -m bench.measure.probe.microbench conv          # numba conv: direct loops vs im2col+GEMM

Numba's compile time (cold, warm cache, steady) is what every run records for it (the
``compile`` records of ``python -m bench run --impls numba``: ``bench.measure.worker``'s cold probe
over an empty ``NUMBA_CACHE_DIR``, then its warm-cache probe).

Timings go through the run's own timer, ``bench.measure.timing.Timer`` (untimed warm-up calls, a
calibration probe, then timed rounds; the median per call), so compilation is never inside
them and a microbenchmark measures what the run measures. The one exception is
``pure_python`` (see its docstring).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np

from bench.core.model import one_hot
from bench.core.params import init_params
from bench.core.spec import ModelSpec
from bench.core.threads import apply_threads, configured_threads
from bench.measure.timing import Timer, TimingConfig
from bench.plan.presets import preset


def _batch(spec: ModelSpec, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.random((n, *spec.input_shape))
    return x, one_hot(rng.integers(0, spec.num_classes, n), spec.num_classes)


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1, name: str = "microbench") -> float:
    """Median seconds per call over ``repeats`` timed rounds of ``bench.measure.timing.Timer``
    (``warmup`` untimed calls first, at least one; a round lasts at least its default
    ``round_min_s``, so a fast call is repeated within a round)."""
    config = TimingConfig(warmup_rounds=warmup, min_rounds=repeats, max_rounds=repeats)
    return Timer(config, group="microbench").measure(name, fn).median_s


def train_step_time(impl: str, spec: ModelSpec, dtype: str, batch: int, repeats: int, warmup: int = 1) -> float:
    from bench.plan import backends

    m = backends.get(impl).build(spec, init_params(spec, 0), dtype)
    x, y = _batch(spec, batch)
    xd, yd = m.to_device(x), m.to_device(y)

    def step() -> None:
        m.train_step(xd, yd)
        m.sync()

    return median_time(step, repeats, warmup, name=f"{impl}-{spec.name}-{dtype}-train_step-b{batch}")


def performed_macs(spec: ModelSpec, batch: int) -> int:
    """Multiply-adds a dense/conv train step performs when the first parameter layer's
    input gradient is skipped (as pure_python does): forward + dW + dx above it."""
    macs, seen_param = 0, False
    for layer, inp, out in zip(spec.layers, spec.input_shapes(), spec.shapes(), strict=False):
        if layer.type == "dense":
            m = inp[0] * layer.units
        elif layer.type == "conv2d":
            m = out[0] * out[1] * out[2] * inp[0] * layer.kernel**2
        else:
            continue
        macs += batch * m * (3 if seen_param else 2)
        seen_param = True
    return macs


def pure_python(rounds: int = 3, batch: int = 50, seconds: float = 2.0) -> dict:
    """Rounds of (plain dot rate, one MLP train step), interleaved against drifting load;
    the best of each is compared (max rate, min step time); every raw value is kept.

    Deliberately not ``bench.measure.timing.Timer``: one pure-Python ``mlp`` step at batch 50 takes
    seconds, and what is measured is its ratio to the dot-product rate under the *same*
    load, so each round is a single timed step right next to a baseline measurement (the
    Timer's warm-up and probe calls would triple the cost, and its rounds of one function
    cannot alternate with the baseline). The pure Python step has no compilation to warm up."""
    from bench.plan import backends

    spec, pure = preset("mlp"), backends.get("pure_python")
    dot_rate_baseline = pure.dot_rate_baseline
    m = pure.build(spec, init_params(spec, 0), "float32")
    x, y = _batch(spec, batch)
    xd, yd = m.to_device(x), m.to_device(y)
    rates, steps = [], []
    for _ in range(rounds):
        rates.append(dot_rate_baseline(seconds))
        t0 = time.perf_counter()
        m.train_step(xd, yd)
        steps.append(time.perf_counter() - t0)
    rates.append(dot_rate_baseline(seconds))
    base, t = max(rates), min(steps)
    spec_macs = spec.flops(batch)["train_step"] / 2
    done_macs = performed_macs(spec, batch)
    return {
        "dot_rate_macs_per_s": base,
        "dot_rates": rates,
        "step_s": t,
        "steps_s": steps,
        "spec_macs": spec_macs,
        "performed_macs": done_macs,
        "step_rate_spec_macs_per_s": spec_macs / t,
        "step_rate_performed_macs_per_s": done_macs / t,
        "ratio_spec": spec_macs / t / base,
        "ratio_performed": done_macs / t / base,
    }


def numba_vs_numpy(batch: int = 50, dtype: str = "float32", repeats: int = 7) -> dict:
    out = {}
    for name in ("mlp", "cnn"):
        spec = preset(name)
        train_step_time("numba", spec, dtype, batch, 1)  # compile outside the timed runs
        t_np, t_nb = [], []
        for _ in range(3):  # interleave, against drift from other load
            t_np.append(train_step_time("numpy", spec, dtype, batch, repeats))
            t_nb.append(train_step_time("numba", spec, dtype, batch, repeats))
        np_s, nb_s = min(t_np), min(t_nb)
        out[name] = {"numpy_s": np_s, "numba_s": nb_s, "speedup_numba_over_numpy": np_s / nb_s}
    return out


def conv_variants(batch: int = 50, dtype: str = "float32", repeats: int = 10) -> dict:
    """Forward conv of each cnn-preset conv layer: direct njit loops vs im2col + GEMM (the numba
    backend's own kernels, found through the registry like every backend)."""
    import importlib

    from bench.plan import backends

    K = importlib.import_module(backends.registry()["numba"] + ".kernels")

    spec, rng, res = preset("cnn"), np.random.default_rng(0), {}
    for i, layer in enumerate(spec.layers):
        if layer.type != "conv2d":
            continue
        c, h, w = spec.input_shapes()[i]
        x = rng.random((batch, h, w, c)).astype(dtype)
        wc = rng.random((layer.filters, c, 3, 3)).astype(dtype)
        b = rng.random(layer.filters).astype(dtype)
        wm = np.ascontiguousarray(wc.transpose(0, 2, 3, 1).reshape(layer.filters, -1))
        w_hwio = np.ascontiguousarray(wc.transpose(2, 3, 1, 0))
        p = 1 if layer.padding == "same" else 0
        a = K.conv_im2col_forward(x, wm, b, 3, p)
        d = K.conv_direct_forward(x, w_hwio, b, 3, p)
        assert np.allclose(a, d, rtol=1e-4, atol=1e-4)
        t_i = median_time(lambda: K.conv_im2col_forward(x, wm, b, 3, p), repeats, name=f"im2col-layer{i}")  # noqa: B023
        t_d = median_time(lambda: K.conv_direct_forward(x, w_hwio, b, 3, p), repeats, name=f"direct-layer{i}")  # noqa: B023
        res[f"layer{i} {c}->{layer.filters} {h}x{w}"] = {"im2col_gemm_s": t_i, "direct_s": t_d}
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["pure_python", "numba", "conv"])
    args = ap.parse_args()
    apply_threads(configured_threads())
    if args.what == "pure_python":
        res = pure_python()
    elif args.what == "numba":
        res = numba_vs_numpy()
    else:
        res = conv_variants()
    print(json.dumps({"threads": configured_threads(), args.what: res}, indent=1))


if __name__ == "__main__":
    main()
