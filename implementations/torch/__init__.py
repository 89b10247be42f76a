"""PyTorch implementation (CPU): ``nn.Sequential`` + autograd + ``torch.optim.SGD``.

The variants ``torch-compile`` (``implementations.torch.compiled``) and ``torch-cuda``
(``implementations.torch.cuda``) share ``model.TorchModel``. Importing this package does
not import torch; ``available``/``build``/``settings`` do.
"""

from __future__ import annotations

REQUIRES: tuple[str, ...] = ()


def available() -> tuple[bool, str]:
    try:
        import torch

        return True, f"torch {torch.__version__} (cpu)"
    except Exception as e:
        return False, f"import torch failed: {type(e).__name__}: {e}"


def build(spec, params, dtype: str = "float32", seed: int = 0):
    from .model import TorchModel

    return TorchModel(spec, params, dtype, device="cpu", seed=seed)


def settings() -> dict:
    from .model import torch_settings

    return torch_settings("cpu")
