"""numba: the Winograd F(2x2, 3x3) block against the im2col block of the same backend (loss,
every gradient, the pooled output and argmax), the transforms against their definitions and as
exact adjoints, chunking, which blocks take it, and negative controls (a wrong transform
coefficient, a mirrored input gradient)."""

import numba  # noqa: F401 - a required dependency of the test env
import numpy as np
import pytest
from test_numba_conv_pool import _grads, _spec, rel_err

from bench.plan.presets import preset
from implementations.numba import conv_pool, winograd

BT = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=float)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=float)

# (input channels, size): even and odd sizes (a floored pool row and column), a second block on
# 2x2 (one window) and 3x3 (one window and a floored row), more channels than filters and fewer.
# The first block takes Winograd when its input has more than one channel (one: the direct
# kernels); the second block (4 -> 5 channels) always does, and its input gradient feeds the
# first block's gradients.
GEOMETRIES = [(2, 11), (3, 12), (2, 7), (2, 4), (1, 6), (6, 8)]
TOL = {"float64": 1e-12, "float32": 1e-5}  # float32: 4-term transform sums, reordered GEMM sums


def _im2col(monkeypatch):
    monkeypatch.setattr(conv_pool, "uses_winograd", lambda layer, x_shape: False)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("geom", GEOMETRIES, ids=lambda g: f"c{g[0]}-{g[1]}")
def test_winograd_block_matches_the_im2col_block(geom, dtype, monkeypatch):
    spec = _spec(geom[0], geom[1], 3, "same")
    calls = []  # the comparison is Winograd against im2col, not a path against itself
    orig = winograd.gemm_forward
    monkeypatch.setattr(winograd, "gemm_forward", lambda v, ut, m: (calls.append(v.shape[2]), orig(v, ut, m))[1])
    loss, grads = _grads(spec, dtype, batch=5)
    assert 4 in calls  # the second block's 4 input channels (at least one chunk or shard)
    calls.clear()
    _im2col(monkeypatch)
    loss_ref, grads_ref = _grads(spec, dtype, batch=5)
    assert not calls
    assert abs(loss - loss_ref) <= TOL[dtype] * abs(loss_ref)
    assert grads.keys() == grads_ref.keys()
    for k in grads:
        assert grads[k].shape == grads_ref[k].shape and grads[k].dtype == grads_ref[k].dtype, k
        assert rel_err(grads[k], grads_ref[k]) <= TOL[dtype], (k, rel_err(grads[k], grads_ref[k]))


def _matrices(buf, rows, width):
    return winograd.planes(buf, 0, rows, width)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_forward_block_matches_im2col_output_and_argmax(dtype):
    """The pooled output and its argmax, block against block (the argmax exactly)."""
    rng = np.random.default_rng(3)
    n, h, w, c, o = 4, 9, 10, 5, 6
    x = rng.standard_normal((n, h, w, c)).astype(dtype)
    wm = rng.standard_normal((o, 9 * c)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    t = winograd.tiles(x.shape)
    u, v, m = (winograd.plane_buffer(r, k, dtype) for r, k in ((o, c), (n * t, c), (n * t, o)))  # U as (O, C)
    winograd.weight_transform(wm, c, u)
    winograd.input_transform(x, v)
    winograd.gemm_forward(_matrices(v, n * t, c), _matrices(u, o, c), _matrices(m, n * t, o))
    out, arg = np.empty((n, h // 2, w // 2, o), dtype), np.empty((n, h // 2, w // 2, o), np.int8)
    winograd.output_bias_relu_pool(m, b, out, arg)
    cols, z = np.empty((n * h * w, 9 * c), dtype), np.empty((n * h * w, o), dtype)
    conv_pool.K.im2col(x, 3, 1, cols)
    conv_pool.gemm_forward(cols, wm, z)
    out_ref, arg_ref = np.empty_like(out), np.empty_like(arg)
    conv_pool.bias_relu_pool(z.reshape(n, h, w, o), b, out_ref, arg_ref)
    assert rel_err(out, out_ref) <= TOL[dtype]
    assert np.array_equal(arg, arg_ref)


def test_the_transforms_match_their_matrices():
    """V = B^T d B, U = G g G^T and the output A^T M A written out with NumPy, on one tile."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 2, 2, 1))  # one tile: the 4x4 patch is x inside a zero border
    v = winograd.plane_buffer(1, 1, "float64")
    winograd.input_transform(x, v)
    d = np.pad(x[0, :, :, 0], 1)
    np.testing.assert_allclose(v[:, 0].reshape(4, 4), BT @ d @ BT.T, rtol=0, atol=1e-15)
    wm = rng.standard_normal((1, 9))  # (O, 9 * C), C = 1
    u = winograd.plane_buffer(1, 1, "float64")
    winograd.weight_transform(wm, 1, u)
    np.testing.assert_allclose(u[:, 0].reshape(4, 4), G @ wm.reshape(3, 3) @ G.T, rtol=0, atol=1e-15)
    y = AT @ (u[:, 0].reshape(4, 4) * v[:, 0].reshape(4, 4)) @ AT.T  # the 2x2 conv output
    direct = np.array([[np.sum(d[i : i + 3, j : j + 3] * wm.reshape(3, 3)) for j in range(2)] for i in range(2)])
    np.testing.assert_allclose(y, direct, rtol=0, atol=1e-14)


def test_the_backward_transforms_are_the_forwards_adjoints():
    """<T x, y> = <x, T* y> for the input and weight transforms (odd sizes: the floored row and
    column are read by the last tiles, the border is dropped)."""
    rng = np.random.default_rng(1)
    n, h, w, c, o = 2, 7, 6, 3, 4
    t = winograd.tiles((n, h, w, c))
    x, dx = rng.standard_normal((n, h, w, c)), np.empty((n, h, w, c))
    v, dv = winograd.plane_buffer(n * t, c, "float64"), winograd.plane_buffer(n * t, c, "float64")
    dv[:] = rng.standard_normal(dv.shape)
    winograd.input_transform(x, v)
    winograd.input_grad_transform(dv, dx)
    inner = np.vdot(_matrices(v, n * t, c), _matrices(dv, n * t, c))
    assert abs(inner - np.vdot(x, dx)) <= 1e-12 * abs(inner)
    wm, dw = rng.standard_normal((o, 9 * c)), np.empty((o, 9 * c))
    u, du = winograd.plane_buffer(o, c, "float64"), winograd.plane_buffer(o, c, "float64")
    du[:] = rng.standard_normal(du.shape)
    winograd.weight_transform(wm, c, u)
    winograd.weight_grad_transform(du, c, dw)
    inner = np.vdot(_matrices(u, o, c), _matrices(du, o, c))
    assert abs(inner - np.vdot(wm, dw)) <= 1e-12 * abs(inner)


def test_planes_do_not_share_a_cache_set_and_views_write_through():
    """The plane stride is never a multiple of 4 KiB (the 16 streams would evict each other),
    and ``planes`` is a view: a GEMM's out= lands in the buffer."""
    for rows, width in ((225, 64), (16 * 9, 64), (64, 128), (1, 1), (588, 32)):
        for dtype in ("float32", "float64"):
            buf = winograd.plane_buffer(rows, width, dtype)
            assert buf.shape[1] >= rows * width and (buf.shape[1] * buf.itemsize) % 4096 == 320
            view = winograd.planes(buf, 0, rows, width)
            view[3, -1, -1] = 7
            assert buf[3, rows * width - 1] == 7


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_chunked_winograd_blocks_match_one_chunk(dtype, monkeypatch):
    spec = _spec(2, 11, 3, "same")
    monkeypatch.setattr(conv_pool, "chunks", lambda n, bytes_per_sample: [(0, n)])
    loss_ref, grads_ref = _grads(spec, dtype, batch=5)
    monkeypatch.setattr(conv_pool, "chunks", lambda n, bytes_per_sample: [(s, min(n, s + 2)) for s in range(0, n, 2)])
    loss, grads = _grads(spec, dtype, batch=5)
    assert abs(loss - loss_ref) <= TOL[dtype] * abs(loss_ref)
    for k in grads:
        assert rel_err(grads[k], grads_ref[k]) <= TOL[dtype], k


def test_mnist_cnn_takes_winograd_for_conv2_and_conv3_and_the_direct_kernels_for_conv1(monkeypatch):
    seen = []
    orig = winograd.weight_transform
    monkeypatch.setattr(winograd, "weight_transform", lambda wm, c, u: (seen.append(c), orig(wm, c, u))[1])
    spec = preset("cnn")
    _grads(spec, "float32", batch=2)
    assert seen == [32, 64]  # conv2's and conv3's input channels; conv1 (one channel) runs direct


def test_negative_control_a_wrong_weight_transform_coefficient_fails(monkeypatch):
    """One of U's 16 planes negated (a sign error in G) must break the forward."""
    spec = _spec(2, 11, 3, "same")
    loss, good = _grads(spec, "float64")
    orig = winograd.weight_transform

    def wrong(wm, c, u):
        orig(wm, c, u)
        winograd.planes(u, 0, wm.shape[0], c)[5] *= -1  # the matrix, not the plane's padding

    monkeypatch.setattr(winograd, "weight_transform", wrong)
    bad_loss, bad = _grads(spec, "float64")
    assert abs(bad_loss - loss) > 1e-6 * abs(loss)
    assert max(rel_err(bad[k], good[k]) for k in good) > 1e-3


def test_negative_control_wrong_routing_in_the_winograd_backward_fails(monkeypatch):
    """Routing every window's gradient to its last cell (dM of the wrong cell) must break it."""
    spec = _spec(2, 11, 3, "same")
    _, good = _grads(spec, "float64")
    orig = winograd.pool_grad_bias
    monkeypatch.setattr(
        winograd, "pool_grad_bias", lambda dy, arg, out, dm, db: orig(dy, np.full_like(arg, 3), out, dm, db)
    )
    _, bad = _grads(spec, "float64")
    assert max(rel_err(bad[k], good[k]) for k in good) > 1e-3


def test_negative_control_a_mirrored_input_gradient_fails(monkeypatch):
    """The second block's dx mirrored left-right must break the first block's gradients only."""
    spec = _spec(2, 11, 3, "same")
    _, good = _grads(spec, "float64")
    orig = winograd.input_grad_transform

    def mirrored(dv, dx):
        orig(dv, dx)
        dx[:] = dx[:, :, ::-1].copy()

    monkeypatch.setattr(winograd, "input_grad_transform", mirrored)
    _, bad = _grads(spec, "float64")
    assert rel_err(bad["0.W"], good["0.W"]) > 1e-3
    assert rel_err(bad["3.W"], good["3.W"]) <= 1e-12  # the second block's own gradients are untouched


def test_performed_flops_are_the_sixteen_gemms():
    assert winograd.performed_flops(32, 64, 14, 14) == 2 * 16 * 49 * 32 * 64
    assert winograd.performed_flops(64, 128, 7, 7) == 2 * 16 * 9 * 64 * 128  # the floored row: 3x3 tiles


def test_the_model_reports_the_flops_it_performs():
    """The MNIST cnn's conv2 and conv3 counted as Winograd performs them (the harness's GFLOP/s
    and share of the peak use ``Model.flops``); a network without Winograd blocks keeps the
    spec's count."""
    from bench.core.params import init_params
    from bench.plan import backends

    nb = backends.get("numba")
    cnn, mlp = preset("cnn"), preset("mlp")
    fl, nominal = nb.build(cnn, init_params(cnn, 0), "float32").flops(50), cnn.flops(50)
    saved = 0
    for c, o, h, need_dx in ((32, 64, 14, True), (64, 128, 7, True)):  # conv2, conv3
        direct, gemm, t = 2 * 9 * c * o * h * h, winograd.performed_flops(c, o, h, h), (h // 2) ** 2
        saved += (2 + need_dx) * direct - 3 * gemm - t * (32 * c + 24 * o + 16 * o + 48 * c)
    assert nominal["train_step"] - fl["train_step"] == 50 * saved
    assert fl["train_step"] == fl["forward"] + fl["backward"] + fl["update"]
    assert 2.2 < nominal["train_step"] / fl["train_step"] < 2.4
    assert nb.build(mlp, init_params(mlp, 0), "float32").flops(50) == mlp.flops(50)
