"""Compile-time measurement for the Numba backend (see ``compile_times``).

The parent starts ``python -m implementations.numba.compile`` twice with the same fresh
``NUMBA_CACHE_DIR``: the first child finds it empty (cold: every kernel the train step
uses is compiled and written to the cache), the second loads them from it (warm cache).
Each child times its first ``train_step`` and then the median of a few more.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _child(payload: dict) -> dict:
    """Runs in the subprocess: build, time the first train step, then steady state."""
    import numpy as np

    from bench.params import init_params
    from bench.spec import ModelSpec
    from implementations.base import one_hot
    from implementations.numba.model import NumbaModel

    spec = ModelSpec.from_dict(payload["spec"])
    rng = np.random.default_rng(0)
    n = payload["batch"]
    m = NumbaModel(spec, init_params(spec, 0), payload["dtype"])
    x = m.to_device(rng.random((n, *spec.input_shape)))
    y = m.to_device(one_hot(rng.integers(0, spec.num_classes, n), spec.num_classes))
    t0 = time.perf_counter()
    m.train_step(x, y)
    first = time.perf_counter() - t0
    times = []
    for _ in range(payload["steps"]):
        t0 = time.perf_counter()
        m.train_step(x, y)
        times.append(time.perf_counter() - t0)
    return {"first_call_s": first, "steady_state_s": statistics.median(times)}


def _run_child(payload: dict, cache_dir: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(
        [sys.executable, "-m", "implementations.numba.compile"],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"compile-time child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compile_times(spec, dtype: str = "float32", batch: int | None = None, steps: int = 5) -> dict:
    payload = {"spec": spec.to_dict(), "dtype": dtype, "batch": batch or spec.train.batch_size, "steps": steps}
    with tempfile.TemporaryDirectory(prefix="nnbench-numba-cache-") as cache_dir:
        cold = _run_child(payload, cache_dir)
        warm = _run_child(payload, cache_dir)
    return {
        "spec": spec.name,
        "dtype": dtype,
        "batch": payload["batch"],
        "cold_first_call_s": cold["first_call_s"],
        "warm_cache_first_call_s": warm["first_call_s"],
        "steady_state_s": min(cold["steady_state_s"], warm["steady_state_s"]),
    }


if __name__ == "__main__":
    print(json.dumps(_child(json.loads(sys.stdin.read()))))
