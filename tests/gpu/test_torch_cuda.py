"""torch-cuda on a real CUDA device (skipped, with the reason, everywhere else): agreement
with the NumPy float64 reference on every preset with TF32 off, and a training step that
stays on the device."""

from __future__ import annotations

import numpy as np
import pytest

from bench.agreement import TOLERANCES, check, sample_batch
from bench.params import init_params
from bench.spec import preset

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda_backend():
    from implementations.torch import cuda

    ok, reason = cuda.available()
    if not ok:
        pytest.skip(f"torch-cuda unavailable: {reason}")
    return cuda


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ["tiny-mlp", "tiny-cnn", "mlp", "cnn"])
def test_agreement_on_device(cuda_backend, name, dtype):
    res = check("torch-cuda", name, dtype)
    assert res.passed, res.format(verbose=True)
    if dtype == "float32":
        assert res.worst()["grad"] <= TOLERANCES["float32"].grad


def test_tf32_is_off_and_settings_name_the_device(cuda_backend):
    import torch

    s = cuda_backend.settings()
    assert s["device"] == "cuda" and s["tf32_matmul"] is False and s["tf32_cudnn"] is False
    assert s["device_name"] == torch.cuda.get_device_name(0)


def test_train_step_runs_on_device_and_changes_params(cuda_backend):
    spec = preset("cnn")
    params = init_params(spec, 0)
    m = cuda_backend.build(spec, params, "float32")
    x, y = sample_batch(spec, 50, 0)
    xd, yd = m.to_device(x.astype("float32")), m.to_device(y.astype("float32"))
    assert xd.is_cuda and yd.is_cuda
    for _ in range(3):
        m.train_step(xd, yd)
    m.sync()
    assert not np.allclose(m.params()["0.W"], params["0.W"])
