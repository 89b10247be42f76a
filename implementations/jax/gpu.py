"""``jax-gpu``: the JAX model (``implementations.jax.model``) on the first GPU JAX sees (its CUDA
plugin, ``jax[cuda]``). Float32 matmuls and convolutions run at full precision ("highest", no
TF32), so the results agree with the reference as tightly as every backend's. CPU JAX is the
``jax`` backend: the two never share a row.
"""

from __future__ import annotations

REQUIRES: tuple[str, ...] = ("gpu",)


def available() -> tuple[bool, str]:
    try:
        from .model import gpu_device, jax_version
    except Exception as e:
        return False, f"import jax failed: {type(e).__name__}: {e}"
    try:
        device, why = gpu_device()
    except Exception as e:
        return False, f"no GPU for JAX: {type(e).__name__}: {e}"
    if device is None:
        return False, f"no GPU for JAX: {why}"
    return True, f"jax {jax_version()} on {device.device_kind} ({device.platform})"


def build(spec, params, dtype: str = "float32", seed: int = 0):
    ok, reason = available()
    if not ok:
        raise NotImplementedError(f"jax-gpu: {reason}")
    from .model import JaxModel, gpu_device

    return JaxModel(spec, params, dtype, seed=seed, device=gpu_device()[0])


def settings() -> dict:
    from .model import gpu_device, jax_settings

    return jax_settings(gpu_device()[0])
