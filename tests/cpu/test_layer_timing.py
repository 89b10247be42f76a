"""bench layers: the per-function breakdown runs and names the fused kernels."""

from bench.__main__ import COMMANDS
from bench.measure.probe import layer_timing


def test_breakdown_names_the_fused_numba_kernels():
    rows, threads = layer_timing.breakdown("numba", "cnn", batch=2, dtype="float32", steps=1, top=50)
    assert rows[0][0].startswith("step") and rows[0][1] > 0 and threads >= 1
    labels = " ".join(r[0] for r in rows)
    gemms = ("gemm_forward", "gemm_weight_grad", "gemm_input_grad")
    transforms = ("input_transform", "output_bias_relu_pool", "pool_grad_bias", "input_grad_transform")
    for name in (*gemms, *transforms):  # conv2-3 (Winograd), then conv1 (direct)
        assert f"winograd.py:{name}" in labels, name
    for name in ("conv3x3_bias_relu_pool", "relu_pool_conv3x3_weight_grad"):
        assert name in labels


def test_cli(capsys, monkeypatch):
    monkeypatch.setattr(layer_timing, "apply_threads", lambda n: n)  # leave this process's env alone
    assert COMMANDS["layers"][0] == "bench.measure.probe.layer_timing"
    argv = ["--impls", "numpy", "--model", "tiny-cnn", "--batch", "2", "--steps", "1", "--top", "3"]
    assert layer_timing.main(argv) == 0
    out = capsys.readouterr().out
    assert "numpy tiny-cnn batch 2 float32: train_step" in out and "load average" in out
    assert "MALLOC_MMAP_THRESHOLD_=67108864 MALLOC_TRIM_THRESHOLD_=134217728 (as in the workers)" in out


def test_breakdown_profiles_every_shard_thread(monkeypatch):
    """At 2 threads with the batch in shards, each shard's kernels are seen (on both threads:
    twice the calls of one shard's pass); control: one thread profiles one."""
    import numba
    import pytest

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip(f"Numba's pool has {numba.config.NUMBA_NUM_THREADS} thread(s)")
    from implementations.numba import model

    monkeypatch.setattr(model, "SHARD_MIN_FLOPS", 0.0)
    calls = {}
    for threads in (2, 1):
        monkeypatch.setenv("NNBENCH_THREADS", str(threads))
        rows, profiled = layer_timing.breakdown("numba", "cnn", batch=4, dtype="float32", steps=1, top=80)
        assert profiled == threads
        calls[threads] = next(c for label, _, c in rows if label.endswith(":conv3x3_bias_relu_pool"))
    assert calls == {2: 2, 1: 1}
