"""numpy cnn ops: the pool's bit-arithmetic argmax against a plain window argmax, and the
per-offset input gradient against the plain adjoint (col2im of dcols), each with a control
showing the data can tell the difference."""

import numpy as np
import pytest

from implementations.numpy import cnn


def _windows(x):
    """(N, H, W, C) -> (N, H//2, W//2, C, 4): each window's cells in row-major order."""
    n, h, w, c = x.shape
    ho, wo = h // 2, w // 2
    v = x[:, : 2 * ho, : 2 * wo].reshape(n, ho, 2, wo, 2, c)
    return v.transpose(0, 1, 3, 5, 2, 4).reshape(n, ho, wo, c, 4)


def _tied(shape, seed=0):
    """Few distinct values, so most windows hold ties; a few NaNs."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-1, 2, shape).astype(np.float32)
    x.flat[rng.choice(x.size, 5, replace=False)] = np.nan
    return x


@pytest.mark.parametrize("shape", [(2, 8, 8, 3), (3, 7, 9, 4), (1, 5, 4, 1)])
def test_pool_argmax_is_the_first_maximum_of_each_window(shape):
    x = _tied(shape)
    out, arg = cnn.maxpool_forward(x)
    win = _windows(x)
    np.testing.assert_array_equal(arg, np.argmax(win, axis=-1))  # first maximum; a NaN wins
    np.testing.assert_array_equal(out, np.max(win, axis=-1))
    assert arg.dtype == np.int8
    last = 3 - np.argmax(win[..., ::-1], axis=-1)  # control: the last maximum differs on these ties
    assert (last != arg).mean() > 0.2


GEOMETRIES = [((2, 6, 6, 3), 4, 3, "same"), ((2, 7, 5, 2), 3, 5, "valid"), ((1, 9, 8, 1), 2, 3, "same")]


@pytest.mark.parametrize("shape, o, k, padding", GEOMETRIES)
def test_input_grad_equals_col2im_of_dcols(shape, o, k, padding):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape)
    _, (n, ho, wo) = cnn.im2col(x, k, padding)
    wm = rng.standard_normal((o, k * k * shape[-1]))
    dy2 = rng.standard_normal((n * ho * wo, o))
    want = cnn.col2im(dy2 @ wm, shape, k, padding)
    got = cnn.input_grad(dy2, wm, shape, k, padding)
    assert got.shape == want.shape == shape
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    swapped = wm.reshape(o, k, k, -1).transpose(0, 2, 1, 3).reshape(o, -1)  # control: kh, kw swapped
    assert not np.allclose(cnn.input_grad(dy2, swapped, shape, k, padding), want)
