"""Data-parallel shards (``implementations.shards``) in the NumPy and Numba backends at two
threads: the batch split into one shard per thread, each shard's pass on its own thread with
one BLAS thread, the gradients summed. Sharded against one shard of the same backend (loss,
every gradient, the forward, a training trajectory with dropout on) on the presets, the odd
specs and random specs; the pool's own contract; negative controls (a gradient left out of the
sum; NumPy shards drawing their own dropout masks). The NumPy reference never shards."""

import threading

import numba
import numpy as np
import pytest
from odd_specs import ODD_SPECS

from bench.check.agreement import rel_error
from bench.core.model import one_hot
from bench.core.params import init_params
from bench.core.spec import ModelSpec
from bench.plan import backends
from bench.plan.presets import preset, random_spec
from implementations import shards
from implementations.numba import model as numba_model
from implementations.numpy import model as numpy_model

THREADS = 2
BACKENDS = {"numpy": numpy_model, "numba": numba_model}  # backend -> the module holding SHARD_MIN_FLOPS
pytestmark = pytest.mark.skipif(
    numba.config.NUMBA_NUM_THREADS < THREADS, reason=f"Numba's pool has {numba.config.NUMBA_NUM_THREADS} thread(s)"
)

SPECS = {
    **{name: preset(name) for name in ("tiny-mlp", "tiny-cnn", "mlp", "dnn", "cnn")},
    **{s["name"]: ModelSpec.from_dict(s) for s in ODD_SPECS},
    **{f"random-{seed}": random_spec(seed) for seed in range(3)},
}
DROPOUT = [name for name, spec in SPECS.items() if any(la.type == "dropout" and la.rate > 0 for la in spec.layers)]
TOL = {"float64": 1e-12, "float32": 1e-5}  # the same backend, sums over samples reordered


def rel_err(a, b) -> float:
    return rel_error(a, b)[1]


def batch(spec, n=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, *spec.input_shape)), one_hot(rng.integers(0, spec.num_classes, n), spec.num_classes)


def build(backend, spec, dtype, monkeypatch, sharded: bool, seed=0):
    """A model at THREADS threads; ``sharded``: every batch of >= THREADS samples split, else none."""
    monkeypatch.setenv("NNBENCH_THREADS", str(THREADS))
    monkeypatch.setattr(BACKENDS[backend], "SHARD_MIN_FLOPS", 0.0 if sharded else float("inf"))
    m = backends.get(backend).build(spec, init_params(spec, 0, bias="uniform"), dtype, seed=seed)
    assert m.threads == THREADS
    return m


def trajectory(backend, spec, monkeypatch, sharded: bool, steps=3) -> dict:
    m = build(backend, spec, "float64", monkeypatch, sharded, seed=5)
    x, y = batch(spec, seed=2)
    xd, yd = m.to_device(x), m.to_device(y)
    for _ in range(steps):
        m.train_step(xd, yd)  # dropout on: each shard takes its rows of the batch's masks
    return m.params()


class ShardSpy:
    """Wraps the pool's map: counts calls, records each shard's thread and BLAS thread count."""

    def __init__(self, monkeypatch):
        self.calls, self.seen = 0, []
        orig = shards.ShardPool.map

        def spied(pool, fn, count, then=None):
            self.calls += 1

            def recorded(t):
                self.seen.append((threading.get_ident(), blas_threads()))
                return fn(t)

            return orig(pool, recorded, count, then)

        monkeypatch.setattr(shards.ShardPool, "map", spied)


def blas_threads() -> int:
    from threadpoolctl import threadpool_info

    return max(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", SPECS)
@pytest.mark.parametrize("backend", BACKENDS)
def test_sharded_loss_grads_and_forward_match_one_shard(backend, name, dtype, monkeypatch):
    spec = SPECS[name]
    x, y = batch(spec)
    one = build(backend, spec, dtype, monkeypatch, sharded=False)
    loss_ref, grads_ref = one.loss_and_grads(x, y)
    probs_ref = one.forward(x)
    spy = ShardSpy(monkeypatch)
    split = build(backend, spec, dtype, monkeypatch, sharded=True)
    loss, grads = split.loss_and_grads(x, y)
    probs = split.forward(x)
    assert spy.calls == 2  # loss_and_grads and forward each ran as shards
    tol = TOL[dtype]
    assert abs(loss - loss_ref) <= tol * abs(loss_ref)
    assert probs.shape == probs_ref.shape and rel_err(probs, probs_ref) <= tol
    assert grads.keys() == grads_ref.keys()
    for k in grads:
        assert grads[k].dtype == grads_ref[k].dtype, k
        assert rel_err(grads[k], grads_ref[k]) <= tol, (k, rel_err(grads[k], grads_ref[k]))


@pytest.mark.parametrize("name", ["tiny-cnn", "cnn", *DROPOUT])
@pytest.mark.parametrize("backend", BACKENDS)
def test_sharded_training_follows_the_one_shard_trajectory(backend, name, monkeypatch):
    spec = SPECS[name]
    ref = trajectory(backend, spec, monkeypatch, sharded=False)
    got = trajectory(backend, spec, monkeypatch, sharded=True)
    for k in ref:
        assert rel_err(got[k], ref[k]) <= 1e-12, (k, rel_err(got[k], ref[k]))


def test_negative_control_numpy_shards_drawing_their_own_masks_fail(monkeypatch):
    """Each NumPy shard drawing its dropout mask from the generator (not its rows of the batch's
    masks, drawn first in layer order): training moves apart."""
    spec = SPECS["mlp"]
    ref = trajectory("numpy", spec, monkeypatch, sharded=False)
    orig = numpy_model.XpModel._forward
    monkeypatch.setattr(numpy_model.XpModel, "_forward", lambda self, x, train, masks=None: orig(self, x, train))
    got = trajectory("numpy", spec, monkeypatch, sharded=True)
    assert max(rel_err(got[k], ref[k]) for k in ref) > 1e-6


@pytest.mark.parametrize("backend", BACKENDS)
def test_negative_control_a_gradient_left_out_of_the_sum_fails(backend, monkeypatch):
    """One parameter in no thread's share: its gradient stays shard 0's part alone."""
    spec = SPECS["tiny-cnn"]
    x, y = batch(spec)
    _, ref = build(backend, spec, "float64", monkeypatch, sharded=False).loss_and_grads(x, y)
    m = build(backend, spec, "float64", monkeypatch, sharded=True)
    _, good = m.loss_and_grads(x, y)
    assert max(rel_err(good[k], ref[k]) for k in ref) <= TOL["float64"]
    dropped = m.update_shares[1].pop()
    _, bad = m.loss_and_grads(x, y)
    assert rel_err(bad[dropped], ref[dropped]) > 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
def test_shards_run_on_their_own_threads_with_one_blas_thread(backend, monkeypatch):
    """Each shard on a different Python thread, BLAS at one thread meanwhile, and back after."""
    spec = SPECS["tiny-cnn"]
    spy = ShardSpy(monkeypatch)
    m = build(backend, spec, "float32", monkeypatch, sharded=True)
    before = blas_threads()
    m.train_step(*(m.to_device(a) for a in batch(spec)))
    assert len({ident for ident, _ in spy.seen}) == THREADS
    assert all(blas == 1 for _, blas in spy.seen), spy.seen
    assert blas_threads() == before


def test_the_numpy_reference_and_cupy_on_numpy_never_shard(monkeypatch):
    monkeypatch.setenv("NNBENCH_THREADS", str(THREADS))
    spec, params = SPECS["cnn"], init_params(SPECS["cnn"], 0)
    assert backends.get("numpy").reference(spec, params).shard_pool is None
    assert backends.get("numpy").build(spec, params, "float64").shard_pool is not None  # control
    from implementations.cupy.model import CupyModel

    assert CupyModel(spec, params, "float32", xp=np).shard_pool is None


def test_split_covers_the_batch_in_near_equal_shards():
    assert shards.split(50, 2, 1e9, 200) == [(0, 25), (25, 50)]
    assert shards.split(7, 2, 1e9, 200) == [(0, 3), (3, 7)]
    assert shards.split(7, 3, 1e9, 200) == [(0, 2), (2, 4), (4, 7)]
    assert shards.split(50, 1, 1e9, 200) == [(0, 50)]  # one thread
    assert shards.split(1, 2, 1e9, 200) == [(0, 1)]  # fewer samples than threads
    assert shards.split(50, 2, 8.0, 200) == [(0, 25), (25, 50)]  # a shard of 25 samples is just enough work
    assert shards.split(48, 2, 8.0, 200) == [(0, 48)]


def test_balance_splits_the_parameters_by_size():
    assert shards.balance({"a": 10, "b": 6, "c": 5, "d": 1}, 2) == [["a", "d"], ["b", "c"]]
    assert sorted(sum(shards.balance({"a": 10, "b": 6, "c": 5, "d": 1}, 3), [])) == ["a", "b", "c", "d"]


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
