"""``torch-cuda``: the PyTorch model on the first CUDA device, TF32 off (matmul and cuDNN)
so float32 results agree with the reference; ``sync()`` is ``torch.cuda.synchronize()``."""

from __future__ import annotations

REQUIRES: tuple[str, ...] = ("gpu",)


def available() -> tuple[bool, str]:
    try:
        import torch
    except Exception as e:
        return False, f"import torch failed: {type(e).__name__}: {e}"
    if torch.version.cuda is None:
        return False, f"no CUDA device: torch {torch.__version__} is a CPU-only build"
    try:
        if not torch.cuda.is_available():
            return False, "no CUDA device: torch.cuda.is_available() is False (no driver or no GPU)"
        name = torch.cuda.get_device_name(0)
    except Exception as e:
        return False, f"no CUDA device: {type(e).__name__}: {e}"
    return True, f"torch {torch.__version__} on {name} (CUDA {torch.version.cuda})"


def disable_tf32() -> None:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def build(spec, params, dtype: str = "float32", seed: int = 0):
    ok, reason = available()
    if not ok:
        raise NotImplementedError(f"torch-cuda: {reason}")
    disable_tf32()
    from .model import TorchModel

    return TorchModel(spec, params, dtype, device="cuda", seed=seed)


def settings() -> dict:
    import torch

    from .model import torch_settings

    ok, reason = available()
    if ok:
        disable_tf32()
    s = torch_settings("cuda", compiled=False)
    s["available"] = reason
    if ok:
        s["device_name"] = torch.cuda.get_device_name(0)
        s["cuda"] = torch.version.cuda
        s["cudnn"] = torch.backends.cudnn.version()
    return s
