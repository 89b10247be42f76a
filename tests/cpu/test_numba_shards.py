"""numba's data-parallel shards (``implementations.shards``; backend-neutral checks in
``test_shards``): every kernel a shard calls is a serial twin, on its own thread, with one BLAS
thread; the dropout kernel draws each shard's rows of the batch's mask (negative control: the
offset dropped)."""

import threading

import numba
import pytest
from test_shards import SPECS, THREADS, batch, blas_threads, build, rel_err, trajectory

from implementations.numba import conv_pool, winograd
from implementations.numba import kernels as K

pytestmark = pytest.mark.skipif(
    numba.config.NUMBA_NUM_THREADS < THREADS, reason=f"Numba's pool has {numba.config.NUMBA_NUM_THREADS} thread(s)"
)


def test_negative_control_a_shard_drawing_the_batchs_first_rows_of_the_mask_fails(monkeypatch):
    """Every shard draws rows 0.. of the dropout mask (the offset dropped): training moves apart."""
    spec = SPECS["mlp"]
    ref = trajectory("numba", spec, monkeypatch, sharded=False)
    orig = K.dropout_forward
    monkeypatch.setattr(K, "dropout_forward", lambda x, rate, key, first_row=0: orig(x, rate, key, 0))
    got = trajectory("numba", spec, monkeypatch, sharded=True)
    assert max(rel_err(got[k], ref[k]) for k in ref) > 1e-6


def test_shards_run_on_their_own_threads_serially_with_one_blas_thread(monkeypatch):
    """Each shard's GEMMs run on a different Python thread, inside ``serial_here``, with BLAS at
    one thread; after the step, BLAS has its thread count back."""
    seen = []
    orig = winograd.gemm_forward

    def spy(v, u, m):
        seen.append((threading.get_ident(), K.runs_serial(), blas_threads()))
        orig(v, u, m)

    monkeypatch.setattr(winograd, "gemm_forward", spy)
    spec = SPECS["cnn"]  # conv2 and conv3 run Winograd's gemm_forward
    m = build("numba", spec, "float32", monkeypatch, sharded=True)
    before = blas_threads()
    m.train_step(*(m.to_device(a) for a in batch(spec)))
    assert len({ident for ident, _, _ in seen}) == THREADS
    assert all(serial and blas == 1 for _, serial, blas in seen), seen
    assert blas_threads() == before
    seen.clear()  # control: one shard runs on this thread alone, with the parallel kernels
    build("numba", spec, "float32", monkeypatch, sharded=False).loss_and_grads(*batch(spec))
    assert {ident for ident, _, _ in seen} == {threading.get_ident()}
    assert not any(serial for _, serial, _ in seen)


def _spy_parallel_kernels(monkeypatch) -> list:
    """Every parallel kernel wrapped: the list gets whether each call came from the main thread."""
    calls: list = []
    for module in (K, conv_pool, winograd):
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
    m = build("numba", spec, "float64", monkeypatch, sharded=True)
    m.train_step(*(m.to_device(a) for a in batch(spec)))
    assert calls == [(n, True) for n, _ in calls]  # only the main thread's update, if any
    sharded_calls = len(calls)
    m = build("numba", spec, "float64", monkeypatch, sharded=False)
    m.loss_and_grads(*batch(spec))
    assert len(calls) > sharded_calls
