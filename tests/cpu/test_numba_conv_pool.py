"""numba: the fused conv + relu + 2x2 pool block against the general (unfused) path of the
same backend, on odd geometries (valid padding, 5x5 kernels, odd sizes with floored pool
rows, 2 input channels); the direct 3x3 one-channel kernels against the im2col block; buffer
reuse across batch sizes; negative controls."""

import threading

import numba  # noqa: F401 - a required dependency of the test env
import numpy as np
import pytest

from bench.check.agreement import rel_error
from bench.core.model import one_hot
from bench.core.params import init_params
from bench.core.spec import ModelSpec
from bench.plan import backends
from implementations.numba import conv_pool

NB = backends.get("numba")


def rel_err(a, b) -> float:
    return rel_error(a, b)[1]


def _spec(channels: int, size: int, kernel: int, padding: str) -> ModelSpec:
    return ModelSpec.from_dict(
        {
            "name": f"block-{channels}-{size}-{kernel}-{padding}",
            "input_shape": [channels, size, size],
            "loss": "mse",
            "layers": [
                {"type": "conv2d", "filters": 4, "kernel": kernel, "padding": padding},
                {"type": "relu"},
                {"type": "maxpool2d"},
                {"type": "conv2d", "filters": 5, "kernel": 3, "padding": "same"},
                {"type": "relu"},
                {"type": "maxpool2d"},
                {"type": "flatten"},
                {"type": "dense", "units": 3},
                {"type": "softmax"},
            ],
            "train": {"lr": 0.1, "batch_size": 4, "epochs": 1},
        }
    )


GEOMETRIES = [
    (1, 12, 3, "same"),
    (2, 11, 3, "same"),
    (1, 13, 5, "valid"),
    (2, 9, 5, "same"),
    (1, 10, 3, "valid"),
    (1, 11, 3, "same"),  # the direct 3x3 kernels with a floored pool row and column
    (1, 9, 3, "valid"),
]
DIRECT = [g for g in GEOMETRIES if g[0] == 1 and g[2] == 3]  # one channel, 3x3: the first block runs direct


def _grads(spec, dtype, batch=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, *spec.input_shape))
    y = one_hot(rng.integers(0, spec.num_classes, batch), spec.num_classes)
    m = NB.build(spec, init_params(spec, 0, bias="uniform"), dtype)
    return m.loss_and_grads(x, y)


def _unfused(monkeypatch):
    monkeypatch.setattr(conv_pool, "fusable", lambda layers, i: False)


@pytest.mark.parametrize("geom", GEOMETRIES, ids=lambda g: "-".join(map(str, g)))
def test_fused_block_matches_the_general_path(geom, monkeypatch):
    spec = _spec(*geom)
    assert conv_pool.fusable(spec.layers, 0) and conv_pool.fusable(spec.layers, 3)
    loss, grads = _grads(spec, "float64")
    _unfused(monkeypatch)
    loss_ref, grads_ref = _grads(spec, "float64")
    assert abs(loss - loss_ref) <= 1e-12 * abs(loss_ref)
    assert grads.keys() == grads_ref.keys()
    for k in grads:
        assert rel_err(grads[k], grads_ref[k]) <= 1e-12, k


def _two_sample_chunks(monkeypatch):
    """Every block in chunks of 2 samples (a batch of 5: 2, 2, 1), whatever the thread count."""
    monkeypatch.setattr(conv_pool, "chunks", lambda n, bytes_per_sample: [(s, min(n, s + 2)) for s in range(0, n, 2)])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("geom", GEOMETRIES, ids=lambda g: "-".join(map(str, g)))
def test_chunked_blocks_match_one_chunk(geom, dtype, monkeypatch):
    """The batch in chunks (ragged last one; the backward's first chunk reuses the forward's
    columns) against one chunk: dW and db are sums over chunks, everything else is exact."""
    spec = _spec(*geom)
    monkeypatch.setattr(conv_pool, "chunks", lambda n, bytes_per_sample: [(0, n)])
    loss_ref, grads_ref = _grads(spec, dtype, batch=5)
    _two_sample_chunks(monkeypatch)
    loss, grads = _grads(spec, dtype, batch=5)
    tol = 1e-12 if dtype == "float64" else 1e-5
    assert abs(loss - loss_ref) <= tol * abs(loss_ref)
    for k in grads:
        assert rel_err(grads[k], grads_ref[k]) <= tol, (k, rel_err(grads[k], grads_ref[k]))


def test_chunks_cover_the_batch_in_equal_parts_where_serial_and_one_chunk_otherwise(monkeypatch):
    from implementations.numba import kernels as K

    per_sample = conv_pool.CHUNK_BYTES // 10  # 10 samples fill a chunk
    with K.serial_here():
        assert conv_pool.chunks(25, per_sample) == [(0, 8), (8, 16), (16, 25)]  # 3 chunks, not 10 + 10 + 5
        assert conv_pool.chunks(20, per_sample) == [(0, 10), (10, 20)]
        assert conv_pool.chunks(3, 10 * conv_pool.CHUNK_BYTES) == [(0, 1), (1, 2), (2, 3)]  # at least one sample
    monkeypatch.setattr(K.numba, "get_num_threads", lambda: 2)  # not serial: a parallel thread
    assert conv_pool.chunks(25, per_sample) == [(0, 25)]
    monkeypatch.setattr(K.numba, "get_num_threads", lambda: 1)  # Numba at one thread is serial too
    assert conv_pool.chunks(20, per_sample) == [(0, 10), (10, 20)]


def _no_im2col_in_backward(monkeypatch):
    """The backward's im2col calls do nothing (its columns are whatever ``cols`` holds). The flag
    is per thread: at 2 threads the batch runs as 2 shards, and one shard's backward overlaps the
    other's forward (a shared flag skipped that forward's im2col too, in a clean clone's timing)."""
    state = threading.local()
    im2col, backward = conv_pool.K.im2col, conv_pool.backward

    def maybe_im2col(x, k, p, cols):
        if not getattr(state, "backward", False):
            im2col(x, k, p, cols)

    def flagged_backward(*args):
        state.backward = True
        try:
            return backward(*args)
        finally:
            state.backward = False

    monkeypatch.setattr(conv_pool.K, "im2col", maybe_im2col)
    monkeypatch.setattr(conv_pool, "backward", flagged_backward)


@pytest.mark.parametrize("chunked", [False, True])
def test_backward_reuses_only_the_columns_cols_still_holds(chunked, monkeypatch):
    """One chunk: the backward needs no im2col at all, so skipping it changes nothing (the
    forward's columns are reused). Chunks (negative control): only the last chunk's columns
    are still there, so skipping the rebuilds must break the gradients."""
    spec = _spec(2, 11, 3, "same")
    monkeypatch.setattr(conv_pool, "uses_winograd", lambda layer, x_shape: False)  # the im2col block
    if chunked:
        _two_sample_chunks(monkeypatch)
    else:
        monkeypatch.setattr(conv_pool, "chunks", lambda n, bytes_per_sample: [(0, n)])
    _, good = _grads(spec, "float64", batch=5)
    _no_im2col_in_backward(monkeypatch)
    _, skipped = _grads(spec, "float64", batch=5)
    worst = max(rel_err(skipped[k], good[k]) for k in good)
    assert worst > 1e-3 if chunked else worst == 0.0


def test_buffers_are_reused_across_batch_sizes_and_grads_do_not_alias_them():
    spec = _spec(2, 11, 3, "same")
    m = NB.build(spec, init_params(spec, 0, bias="uniform"), "float64")
    rng = np.random.default_rng(1)
    batches = [(rng.standard_normal((n, *spec.input_shape)), one_hot(rng.integers(0, 3, n), 3)) for n in (3, 5, 3)]
    first = m.loss_and_grads(*batches[0])
    kept = {k: v.copy() for k, v in first[1].items()}
    m.loss_and_grads(*batches[1])  # another shape: buffers are re-made
    again = m.loss_and_grads(*batches[0])
    for k in kept:
        assert np.array_equal(first[1][k], kept[k]), k  # not overwritten by later steps
        assert np.array_equal(again[1][k], kept[k]), k


def test_negative_control_wrong_routing_in_the_fused_backward_fails(monkeypatch):
    """Routing every window's gradient to its last cell must break the comparison (the im2col
    block; the Winograd block's own control is in test_numba_winograd)."""
    monkeypatch.setattr(conv_pool, "uses_winograd", lambda layer, x_shape: False)
    spec = _spec(1, 12, 3, "same")
    _, good = _grads(spec, "float64")
    orig = conv_pool.pool_relu_grad_bias
    monkeypatch.setattr(
        conv_pool, "pool_relu_grad_bias", lambda dy, arg, out, dz, db: orig(dy, np.full_like(arg, 3), out, dz, db)
    )
    _, bad = _grads(spec, "float64")
    assert max(rel_err(bad[k], good[k]) for k in good) > 1e-3


def _im2col_only(monkeypatch):
    monkeypatch.setattr(conv_pool, "direct", lambda layer, x_shape, need_dx: False)


def test_the_direct_kernels_serve_exactly_one_channel_3x3_first_layers(monkeypatch):
    calls = []
    orig = conv_pool.conv3x3_bias_relu_pool
    monkeypatch.setattr(conv_pool, "conv3x3_bias_relu_pool", lambda *a: (calls.append(a[0].shape), orig(*a))[1])
    for geom in GEOMETRIES:
        calls.clear()
        _grads(_spec(*geom), "float64")
        assert len(calls) == (1 if geom in DIRECT else 0), geom  # never the second block (it needs dx)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("geom", DIRECT, ids=lambda g: "-".join(map(str, g)))
def test_direct_block_matches_the_im2col_block(geom, dtype, monkeypatch):
    spec = _spec(*geom)
    loss, grads = _grads(spec, dtype)
    _im2col_only(monkeypatch)
    loss_ref, grads_ref = _grads(spec, dtype)
    tol = 1e-12 if dtype == "float64" else 1e-5  # float32: a 9-tap sum and a 4-cell reduction reordered
    assert abs(loss - loss_ref) <= tol * abs(loss_ref)
    for k in grads:
        assert rel_err(grads[k], grads_ref[k]) <= tol, (k, rel_err(grads[k], grads_ref[k]))


def test_negative_control_a_transposed_patch_in_the_direct_weight_gradient_fails(monkeypatch):
    """Reading the input patch transposed (rows for columns) must break the comparison."""
    spec = _spec(1, 12, 3, "same")
    _, good = _grads(spec, "float64")
    orig = conv_pool.relu_pool_conv3x3_weight_grad
    monkeypatch.setattr(
        conv_pool,
        "relu_pool_conv3x3_weight_grad",
        lambda x, *a: orig(np.ascontiguousarray(x.transpose(0, 2, 1, 3)), *a),
    )
    _, bad = _grads(spec, "float64")
    assert rel_err(bad["0.W"], good["0.W"]) > 1e-3
    assert rel_err(bad["0.b"], good["0.b"]) <= 1e-12  # the bias gradient does not read the patch


def test_the_direct_forward_keeps_the_first_of_tied_cells():
    """The direct kernel keeps the first maximum of a tied window; the last-maximum rule
    differs on a zero input (every cell ties at relu(b) = b for b > 0)."""
    x = np.zeros((1, 4, 4, 1))
    wt, b = np.ones((9, 2)), np.array([0.5, -0.5])
    out, arg = np.empty((1, 2, 2, 2)), np.empty((1, 2, 2, 2), dtype=np.int8)
    conv_pool.conv3x3_bias_relu_pool(x, wt, b, 1, out, arg)
    assert np.array_equal(out[..., 0], np.full((1, 2, 2), 0.5)) and np.array_equal(out[..., 1], np.zeros((1, 2, 2)))
    assert (arg == 0).all()  # the first cell, not 3 (last) for either channel
