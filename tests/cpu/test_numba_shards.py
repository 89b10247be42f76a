"""numba at more than one thread: the batch split into one shard per thread (``shards``), each
shard's pass on its own thread with serial kernels and one BLAS thread, the gradients summed.
Sharded against one shard of the same backend (loss, every gradient, the forward, a training
trajectory with dropout on), on the presets, the odd specs and random specs; where the shards
run and with what; negative controls (a shard drawing the batch's first rows of a dropout mask,
a shard's gradient left out of the sum)."""

import threading

import numba
import numpy as np
import pytest
from odd_specs import ODD_SPECS

import implementations
from bench.agreement import rel_error
from bench.params import init_params
from bench.spec import ModelSpec, preset, random_spec
from implementations import shards
from implementations.base import one_hot
from implementations.numba import conv_pool
from implementations.numba import kernels as K

NB = implementations.get("numba")
THREADS = 2
pytestmark = pytest.mark.skipif(
    numba.config.NUMBA_NUM_THREADS < THREADS, reason=f"Numba's pool has {numba.config.NUMBA_NUM_THREADS} thread(s)"
)

SPECS = {
    **{name: preset(name) for name in ("tiny-mlp", "tiny-cnn", "mlp", "dnn", "cnn")},
    **{s["name"]: ModelSpec.from_dict(s) for s in ODD_SPECS},
    **{f"random-{seed}": random_spec(seed) for seed in range(3)},
}
TOL = {"float64": 1e-12, "float32": 1e-5}  # the same backend, sums over samples reordered


def rel_err(a, b) -> float:
    return rel_error(a, b)[1]


def _batch(spec, n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, *spec.input_shape)), one_hot(rng.integers(0, spec.num_classes, n), spec.num_classes)


def _model(spec, dtype, monkeypatch, sharded: bool, seed=0):
    """A model at THREADS threads; ``sharded``: every batch of >= THREADS samples split, else none."""
    monkeypatch.setenv("NNBENCH_THREADS", str(THREADS))
    monkeypatch.setattr(shards, "MIN_FLOPS_PER_PARAM", 0.0 if sharded else float("inf"))
    m = NB.build(spec, init_params(spec, 0, bias="uniform"), dtype, seed=seed)
    assert m.threads == THREADS
    return m


class MapCounter:
    """Counts the shard pool's map calls (so a test knows the shards really ran)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        orig = shards.ShardPool.map

        def counted(pool, *args, **kwargs):
            self.calls += 1
            return orig(pool, *args, **kwargs)

        monkeypatch.setattr(shards.ShardPool, "map", counted)


def test_split_covers_the_batch_in_near_equal_shards():
    assert shards.split(50, 2, 1e9) == [(0, 25), (25, 50)]
    assert shards.split(7, 2, 1e9) == [(0, 3), (3, 7)]
    assert shards.split(7, 3, 1e9) == [(0, 2), (2, 4), (4, 7)]
    assert shards.split(50, 1, 1e9) == [(0, 50)]  # one thread
    assert shards.split(1, 2, 1e9) == [(0, 1)]  # fewer samples than threads
    per_param = shards.MIN_FLOPS_PER_PARAM / 25  # a shard of 25 samples is just enough work
    assert shards.split(50, 2, per_param) == [(0, 25), (25, 50)]
    assert shards.split(48, 2, per_param) == [(0, 48)]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", SPECS)
def test_sharded_loss_grads_and_forward_match_one_shard(name, dtype, monkeypatch):
    spec = SPECS[name]
    x, y = _batch(spec)
    one = _model(spec, dtype, monkeypatch, sharded=False)
    loss_ref, grads_ref = one.loss_and_grads(x, y)
    probs_ref = one.forward(x)
    counter = MapCounter(monkeypatch)
    split = _model(spec, dtype, monkeypatch, sharded=True)
    loss, grads = split.loss_and_grads(x, y)
    probs = split.forward(x)
    assert counter.calls == 2  # loss_and_grads and forward each ran as shards
    tol = TOL[dtype]
    assert abs(loss - loss_ref) <= tol * abs(loss_ref)
    assert probs.shape == probs_ref.shape and rel_err(probs, probs_ref) <= tol
    assert grads.keys() == grads_ref.keys()
    for k in grads:
        assert grads[k].dtype == grads_ref[k].dtype, k
        assert rel_err(grads[k], grads_ref[k]) <= tol, (k, rel_err(grads[k], grads_ref[k]))


def _trajectory(spec, monkeypatch, sharded: bool, steps=3) -> dict:
    m = _model(spec, "float64", monkeypatch, sharded, seed=5)
    x, y = _batch(spec, seed=2)
    xd, yd = m.to_device(x), m.to_device(y)
    for _ in range(steps):
        m.train_step(xd, yd)  # dropout on: each shard draws its rows of the batch's masks
    return m.params()


DROPOUT = [name for name, spec in SPECS.items() if any(la.type == "dropout" and la.rate > 0 for la in spec.layers)]


@pytest.mark.parametrize("name", ["tiny-cnn", "cnn", *DROPOUT])
def test_sharded_training_follows_the_one_shard_trajectory(name, monkeypatch):
    spec = SPECS[name]
    ref = _trajectory(spec, monkeypatch, sharded=False)
    got = _trajectory(spec, monkeypatch, sharded=True)
    for k in ref:
        assert rel_err(got[k], ref[k]) <= 1e-12, (k, rel_err(got[k], ref[k]))


def test_negative_control_a_shard_drawing_the_batchs_first_rows_of_the_mask_fails(monkeypatch):
    """Every shard draws rows 0.. of the dropout mask (the offset dropped): training moves apart."""
    assert "mlp" in DROPOUT
    spec = SPECS["mlp"]
    ref = _trajectory(spec, monkeypatch, sharded=False)
    orig = K.dropout_forward
    monkeypatch.setattr(K, "dropout_forward", lambda x, rate, key, first_row=0: orig(x, rate, key, 0))
    got = _trajectory(spec, monkeypatch, sharded=True)
    assert max(rel_err(got[k], ref[k]) for k in ref) > 1e-6


def test_negative_control_a_gradient_left_out_of_the_sum_fails(monkeypatch):
    """One parameter in no thread's share: its gradient stays shard 0's part alone."""
    spec = SPECS["tiny-cnn"]
    x, y = _batch(spec)
    _, ref = _model(spec, "float64", monkeypatch, sharded=False).loss_and_grads(x, y)
    m = _model(spec, "float64", monkeypatch, sharded=True)
    _, good = m.loss_and_grads(x, y)
    assert max(rel_err(good[k], ref[k]) for k in ref) <= TOL["float64"]
    dropped = m.update_shares[1].pop()
    _, bad = m.loss_and_grads(x, y)
    assert rel_err(bad[dropped], ref[dropped]) > 1e-3


def test_balance_splits_the_parameters_by_size():
    groups = shards.balance({"a": 10, "b": 6, "c": 5, "d": 1}, 2)
    assert groups == [["a", "d"], ["b", "c"]]
    assert sorted(sum(shards.balance({"a": 10, "b": 6, "c": 5, "d": 1}, 3), [])) == ["a", "b", "c", "d"]


def _blas_threads() -> int:
    from threadpoolctl import threadpool_info

    return max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")


def test_shards_run_on_their_own_threads_serially_with_one_blas_thread(monkeypatch):
    """Each shard's GEMMs run on a different Python thread, inside ``serial_here``, with BLAS at
    one thread; after the step, BLAS has its thread count back."""
    seen = []
    orig = conv_pool.gemm_forward

    def spy(cols, wm, z):
        seen.append((threading.get_ident(), K.runs_serial(), _blas_threads()))
        orig(cols, wm, z)

    monkeypatch.setattr(conv_pool, "gemm_forward", spy)
    spec = SPECS["cnn"]  # conv2 and conv3 run im2col + gemm_forward
    m = _model(spec, "float32", monkeypatch, sharded=True)
    before = _blas_threads()
    m.train_step(*(m.to_device(a) for a in _batch(spec)))
    assert len({ident for ident, _, _ in seen}) == THREADS
    assert all(serial and blas == 1 for _, serial, blas in seen), seen
    assert _blas_threads() == before
    seen.clear()  # control: one shard runs on this thread alone, with the parallel kernels
    _model(spec, "float32", monkeypatch, sharded=False).loss_and_grads(*_batch(spec))
    assert {ident for ident, _, _ in seen} == {threading.get_ident()}
    assert not any(serial for _, serial, _ in seen)


def _spy_parallel_kernels(monkeypatch) -> list:
    """Every parallel kernel wrapped: the list gets whether each call came from the main thread."""
    calls: list = []
    for module in (K, conv_pool):
        for attr in [a for a in vars(module) if a.endswith("_par")]:
            kernel = getattr(module, attr)

            def spy(*args, _kernel=kernel, _name=attr):
                calls.append((_name, threading.current_thread() is threading.main_thread()))
                return _kernel(*args)

            monkeypatch.setattr(module, attr, spy)
    return calls


@pytest.mark.parametrize("name", ["tiny-cnn", "odd-a", "odd-b", "cnn"])
def test_no_parallel_kernel_runs_in_a_shard(name, monkeypatch):
    """The shards call serial twins only (the ``workqueue`` layer may not be entered from two
    threads at once). Control: the same step unsharded at two threads does call parallel ones."""
    spec = SPECS[name]
    calls = _spy_parallel_kernels(monkeypatch)
    m = _model(spec, "float64", monkeypatch, sharded=True)
    m.train_step(*(m.to_device(a) for a in _batch(spec)))
    assert calls == [(n, True) for n, _ in calls]  # only the main thread's update, if any
    sharded_calls = len(calls)
    m = _model(spec, "float64", monkeypatch, sharded=False)
    m.loss_and_grads(*_batch(spec))
    assert len(calls) > sharded_calls


@pytest.mark.parametrize("second_stage", [False, True])
def test_a_shards_exception_is_raised_after_every_shard_stopped(second_stage):
    """The failing shard's own error, not the broken barrier it leaves the others; no second
    stage runs; the pool works afterwards."""
    pool = shards.pool("test", THREADS)
    done, combined = [], []

    def fn(t):
        if t == 1:
            raise ValueError("shard 1 failed")
        threading.Event().wait(0.05)
        done.append(t)
        return t

    then = (lambda t, results: combined.append(t)) if second_stage else None
    with pytest.raises(ValueError, match="shard 1 failed"):
        pool.map(fn, THREADS, then)
    assert done == [0] and combined == []
    assert pool.map(lambda t: t * 10, THREADS) == [0, 10]
    assert pool.map(lambda t: t, THREADS, lambda t, results: combined.append((t, list(results)))) == [0, 1]
    assert sorted(combined) == [(0, [0, 1]), (1, [0, 1])]  # each thread's second stage saw every result
