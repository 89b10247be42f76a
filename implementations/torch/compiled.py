"""``torch-compile``: the CPU PyTorch model with forward + loss run through ``torch.compile``
(inductor, which generates and builds C++ on CPU, so it needs a working C++ compiler).

Compile time is kept apart from step time: ``model.compile_seconds`` maps each mode
(``train``, ``eval``, ``forward``) to the wall time of its first call (the compile plus one
step), and ``settings()["compile_seconds"]`` repeats the latest model's. A warm inductor
cache (``/tmp/torchinductor_<user>``) makes later compiles several times faster.
"""

from __future__ import annotations

REQUIRES: tuple[str, ...] = ()


def available() -> tuple[bool, str]:
    """Cheap checks only (a real compile takes 5-20 s): torch imports, dynamo supports this
    Python, and inductor finds a C++ compiler. tests/cpu/test_torch.py compiles for real."""
    try:
        import torch
        import torch._dynamo
    except Exception as e:
        return False, f"import torch failed: {type(e).__name__}: {e}"
    try:
        if not torch._dynamo.is_dynamo_supported():
            return False, "torch.compile (dynamo) does not support this Python version"
        from torch._inductor import cpp_builder

        cxx = cpp_builder.get_cpp_compiler()
    except Exception as e:
        return False, f"torch.compile cannot build on this machine: {type(e).__name__}: {e}"
    return True, f"torch {torch.__version__} compile (inductor, {cxx})"


def build(spec, params, dtype: str = "float32", seed: int = 0):
    from .model import TorchModel

    return TorchModel(spec, params, dtype, device="cpu", compile=True, seed=seed)


def settings() -> dict:
    from .model import torch_settings

    return torch_settings("cpu", compiled=True)
