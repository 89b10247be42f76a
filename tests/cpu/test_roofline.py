"""The roofline: compulsory bytes counted from the spec, the memory roofs measured by the STREAM-style
probe, and the bound each speed record gets (``bench.measure.derived.roofline``)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from bench.core.spec import ModelSpec
from bench.measure.derived import fill_derived, memory_roofs
from bench.measure.probe import stream
from bench.measure.results import make_record
from bench.plan.presets import preset


def test_traffic_of_tiny_mlp_counted_by_hand():
    """tiny-mlp (8x8 input, 16-12-10) at batch 8, float32: P = 64*16+16 + 16*12+12 + 12*10+10 = 1374
    parameters; X = 8 * 64 inputs; per sample the layers write dense 16, sigmoid 16, dropout 16
    (training only), dense 12, tanh 12, dense 10, softmax 10 values (flatten is a view)."""
    s = 4
    p, x = 1374 * s, 8 * 64 * s
    a_inf, a = 8 * (16 + 16 + 12 + 12 + 10 + 10) * s, 8 * (16 + 16 + 16 + 12 + 12 + 10 + 10) * s
    want = {
        "forward": {"bytes": p + x + a_inf, "working_set": p + x + a_inf},
        "loss_and_grads": {"bytes": 2 * p + x + 2 * a, "working_set": 2 * p + x + a},
        "train_step": {"bytes": 3 * p + x + 2 * a, "working_set": 2 * p + x + a},
    }
    spec = preset("tiny-mlp")
    assert spec.num_params() == 1374
    assert spec.traffic(8, s) == want
    assert spec.traffic(8, 8)["train_step"]["bytes"] == 2 * want["train_step"]["bytes"]  # float64
    # negative control: a count that also wrote flatten's output (a copy) is not this one
    flat = 8 * 64 * s
    assert spec.traffic(8, s)["forward"]["bytes"] != p + x + a_inf + flat


def test_traffic_grows_with_batch_only_through_inputs_and_activations():
    spec = preset("mlp")
    t1, t50 = spec.traffic(1), spec.traffic(50)
    p = spec.num_params() * 4
    for phase, k in (("forward", 1), ("loss_and_grads", 2), ("train_step", 3)):
        per_sample = (t50[phase]["bytes"] - t1[phase]["bytes"]) / 49
        assert t1[phase]["bytes"] == pytest.approx(k * p + per_sample, rel=1e-12)


def test_cache_sizes_from_sysfs(tmp_path):
    for idx, (level, kind, size) in enumerate([(1, "Data", "48K"), (1, "Instruction", "32K"), (2, "Unified", "2048K"),
                                                (3, "Unified", "32M")]):  # fmt: skip
        d = tmp_path / f"index{idx}"
        d.mkdir()
        (d / "level").write_text(f"{level}\n")
        (d / "type").write_text(f"{kind}\n")
        (d / "size").write_text(f"{size}\n")
    assert stream.cache_sizes(tmp_path) == {"L2": 2 << 20, "LLC": 32 << 20, "source": "sysfs"}
    ws = stream.working_sets(stream.cache_sizes(tmp_path))
    assert ws["L2"] == 1 << 20 and ws["LLC"] == 16 << 20 and ws["DRAM"] == 128 << 20
    # no sysfs: sysconf, else the assumed sizes, and the record says which
    assert stream.cache_sizes(tmp_path / "none")["source"] in ("sysconf", "assumed (no sysfs or sysconf cache sizes)")


def _independent_copy_gbps(nbytes: int, rounds: int = 5) -> float:
    """A plain NumPy slice assignment of a large array, timed here: 2 x its bytes moved."""
    src = np.ones(nbytes // 8)
    dst = np.zeros_like(src)
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        dst[...] = src
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9


def test_dram_bandwidth_agrees_with_an_independent_copy_within_2x():
    """The probe's DRAM copy against a large array copied and timed here; the negative control: the
    same probe inside L2 is not a DRAM figure (it reads well above the independent estimate)."""
    caches = stream.cache_sizes()
    ws = stream.working_sets(caches)
    dram = stream.measure("copy", ws["DRAM"], threads=1, rounds=5)["gbps"]
    ref = _independent_copy_gbps(ws["DRAM"] // 2)
    assert 0.5 < dram / ref < 2.0, (dram, ref)
    l2 = stream.measure("copy", ws["L2"], threads=1, rounds=5)["gbps"]
    assert l2 / ref > 2.0, ("an in-cache copy would pass as DRAM bandwidth", l2, ref)


def test_measure_all_covers_every_level_and_kernel_at_two_threads():
    rows = stream.measure_all(2, rounds=2, caches={"L2": 256 << 10, "LLC": 4 << 20, "source": "test"})
    assert {(r["level"], r["kernel"]) for r in rows} == {(lv, k) for lv in stream.LEVELS for k in stream.KERNELS}
    assert all(r["threads"] == 2 and r["gbps"] >= r["gbps_median"] > 0 for r in rows)
    triad = next(r for r in rows if r["level"] == "DRAM" and r["kernel"] == "triad")
    assert triad["ws_bytes"] == pytest.approx(64 << 20, rel=1e-3)  # at least 64 MiB for DRAM


def _records(ws: int, nbytes: int, median: float = 0.01, gflops_model: float = 10.0) -> list[dict]:
    recs = [make_record("speed", impl="numpy", model="mlp", dtype="float32", phase="train_step", batch_size=50,
                        median_s=median, gflops=gflops_model, gflops_model=gflops_model, bytes=nbytes,
                        working_set_bytes=ws)]  # fmt: skip
    recs.append(make_record("peak", impl="numpy", dtype="float32", gflops=100.0, when="before"))
    for level, size, gbps in (("L2", 1 << 20, 80.0), ("LLC", 32 << 20, 60.0), ("DRAM", None, 20.0)):
        for when, k in (("before", 1.0), ("after", 0.9)):
            recs.append(make_record("bandwidth", impl="numpy", dtype="float64", level=level, kernel="triad", threads=1,
                                    cache_bytes=size, gbps=gbps * k, when=when))  # fmt: skip
            recs.append(make_record("bandwidth", impl="numpy", dtype="float64", level=level, kernel="copy", threads=1,
                                    cache_bytes=size, gbps=999.0, when=when))  # fmt: skip
    return recs


def test_roofs_are_the_best_triad_per_level():
    roofs = memory_roofs(_records(1, 1))
    assert roofs["L2"] == (80.0, 1 << 20) and roofs["LLC"] == (60.0, 32 << 20) and roofs["DRAM"][0] == 20.0


@pytest.mark.parametrize(
    ("ws", "nbytes", "bound", "limit"),
    [
        (10 << 20, 1e6, "compute", 0.1 * 0.01),  # 0.1 GFLOP at 100 GFLOP/s: 1 ms; 1 MB from the LLC: 17 us
        (10 << 20, 600e6, "memory (LLC)", 600e6 / 60e9),  # fits the LLC: 10 ms at 60 GB/s
        (512 << 10, 600e6, "memory (L2)", 600e6 / 80e9),
        (64 << 20, 600e6, "memory (DRAM)", 600e6 / 20e9),  # past the LLC
    ],
)
def test_the_bound_takes_the_level_the_working_set_fits_in(ws, nbytes, bound, limit):
    r = next(r for r in fill_derived(_records(ws, int(nbytes))) if r["kind"] == "speed")
    assert r["bound"] == bound
    assert r["limit_s"] == pytest.approx(limit)
    assert r["x_of_limit"] == pytest.approx(limit / 0.01)


def test_no_bound_without_roofs_or_bytes():
    recs = [r for r in _records(1 << 20, 1000) if r["kind"] != "bandwidth"]
    r = next(r for r in fill_derived(recs) if r["kind"] == "speed")
    assert r["limit_s"] is None and r["x_of_limit"] is None  # a run before the bandwidth probe
    recs = _records(1 << 20, 1000)
    recs[0]["bytes"] = None  # a GPU case: the CPU's roofs say nothing of it
    assert next(r for r in fill_derived(recs) if r["kind"] == "speed")["x_of_limit"] is None


def test_spec_traffic_is_data_from_the_spec():
    """A spec made from a dict (what a user's TOML holds) counts its own bytes."""
    spec = ModelSpec.from_dict(
        {"name": "t", "input_shape": [1, 28, 28], "loss": "mse",
         "layers": [{"type": "flatten"}, {"type": "dense", "units": 10}, {"type": "softmax"}],
         "train": {"lr": 0.1, "batch_size": 2, "epochs": 1}}
    )  # fmt: skip
    p, x, a = (784 * 10 + 10) * 4, 2 * 784 * 4, 2 * 20 * 4
    assert spec.traffic(2)["train_step"]["bytes"] == 3 * p + x + 2 * a
