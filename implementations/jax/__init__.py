"""JAX implementation (CPU): the network as one pure function, ``jax.value_and_grad`` for the
gradients and ``jax.jit`` (XLA) for every pass. Importing this package does not import jax;
``available``/``build``/``settings`` do.
"""

from __future__ import annotations

REQUIRES: tuple[str, ...] = ()


def available() -> tuple[bool, str]:
    try:
        from .model import jax_version

        return True, f"jax {jax_version()} (cpu)"
    except Exception as e:
        return False, f"import jax failed: {type(e).__name__}: {e}"


def build(spec, params, dtype: str = "float32", seed: int = 0):
    from .model import JaxModel

    return JaxModel(spec, params, dtype, seed=seed)


def settings() -> dict:
    from .model import jax_settings

    return jax_settings()
