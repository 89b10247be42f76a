"""PyTorch network: a ``torch.nn.Sequential`` built from the spec, autograd, ``torch.optim.SGD``
or Keras' Adam written in torch ops.

Layouts: images stay NCHW (PyTorch's own), conv W is already canonical ``(O, I, kh, kw)``;
dense W is transposed to PyTorch's ``(out, in)`` on the way in and back on the way out.
``nn.Flatten`` of NCHW is the canonical feature order, so nothing is permuted.

Fusion: with ``cross_entropy`` the final softmax is *not* in the ``Sequential``: the net
outputs logits and ``nn.CrossEntropyLoss`` (probability targets) fuses log-softmax and
the loss, as PyTorch users write it; ``forward``/``activations`` apply the softmax
afterwards. With ``mse`` the ``nn.Softmax`` is the last module and ``nn.MSELoss`` (mean over
all elements) back-propagates through it.

``compile=True`` (the ``torch-compile`` backend) runs the same net through
``torch.compile``: one graph for forward + loss (backward via AOTAutograd), the
optimizer step stays eager. Compilation happens at the first call of each mode
(train / eval / forward-only) and its wall time is recorded in ``compile_seconds``.

Adam: ``torch.optim.Adam`` adds epsilon to ``sqrt(v / (1 - beta_2**t))``, Keras (the spec)
to ``sqrt(v)`` after folding the bias corrections into the step size; its float64
trajectory differs from the spec's beyond rounding (``tests/cpu/test_torch.py`` shows it), so
``_adam_update`` writes Keras' formula with in-place torch ops on the parameters.

Dropout draws from torch's global generator, seeded with ``seed`` at build.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.core.model import Model, check_supported
from bench.core.params import check_params
from bench.core.spec import ModelSpec
from bench.core.threads import configured_threads

LAYERS = ("conv2d", "maxpool2d", "flatten", "dense", "sigmoid", "relu", "tanh", "softmax", "dropout")
ACTIVATION_MODULES = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}

# Compile times of the most recent torch-compile model, for ``settings()``.
LAST_COMPILE_SECONDS: dict[str, float] = {}


def configure_threads() -> int:
    """Intra-op threads from the harness; inter-op 1 as TF gets (only settable before first use)."""
    n = configured_threads()
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # inter-op pool already started in this process: keep what it has
        pass
    return n


def build_sequential(spec: ModelSpec, logits_out: bool) -> nn.Sequential:
    """``nn.Sequential`` with one module per spec layer (the final softmax left out when
    ``logits_out``), so ``net[i]`` is spec layer ``i``."""
    mods: list[nn.Module] = []
    for layer, inp in zip(spec.layers, spec.input_shapes(), strict=True):
        kind = layer.type
        if kind == "conv2d":
            pad = layer.kernel // 2 if layer.padding == "same" else 0
            mods.append(nn.Conv2d(inp[0], layer.filters, layer.kernel, padding=pad))
        elif kind == "maxpool2d":
            mods.append(nn.MaxPool2d(2))  # stride 2, floor, first max wins
        elif kind == "flatten":
            mods.append(nn.Flatten())  # NCHW flatten = canonical feature order
        elif kind == "dense":
            mods.append(nn.Linear(inp[0], layer.units))
        elif kind == "dropout":
            mods.append(nn.Dropout(layer.rate))  # inverted dropout, active in train() only
        elif kind == "softmax":
            if not logits_out:
                mods.append(nn.Softmax(dim=1))
        else:
            mods.append(ACTIVATION_MODULES[kind]())
    return nn.Sequential(*mods)


class TorchModel(Model):
    backend = "torch"

    def __init__(
        self, spec: ModelSpec, params: dict, dtype: str, device: str = "cpu", compile: bool = False, seed: int = 0
    ):
        check_supported(self.backend, spec, dtype, layers=LAYERS)
        check_params(spec, params)
        self.spec, self.dtype, self.device = spec, dtype, torch.device(device)
        self.tdtype = TORCH_DTYPES[dtype]
        self.threads = configure_threads()
        torch.manual_seed(seed)  # dropout masks (nn.Dropout takes no generator of its own)
        self.fused_ce = spec.loss == "cross_entropy"
        self.net = build_sequential(spec, logits_out=self.fused_ce).to(device=self.device, dtype=self.tdtype)
        self._load(params)
        self.loss_fn = nn.CrossEntropyLoss() if self.fused_ce else nn.MSELoss()
        self.opt = torch.optim.SGD(self.net.parameters(), lr=spec.train.lr)
        self.adam = spec.train.optimizer == "adam"
        self.adam_t = 0
        self.adam_mv = [(torch.zeros_like(p), torch.zeros_like(p)) for p in self.net.parameters()]
        self.compiled = compile
        self.compile_seconds: dict[str, float] = {}
        self._fwd: Any = self.net
        self._fwd_loss: Any = self._loss_eager
        if compile:
            self._fwd = torch.compile(self.net)
            self._fwd_loss = torch.compile(self._loss_eager)
        self._mode: bool | None = None

    # ------------------------------------------------------------------ parameters
    def _load(self, params: dict) -> None:
        with torch.no_grad():
            for name, value in params.items():
                i, kind = int(name.split(".")[0]), name.split(".")[1]
                a = np.asarray(value, dtype=np.float64)
                if kind == "W" and self.spec.layers[i].type == "dense":
                    a = a.T  # (in, out) -> (out, in)
                target = self.net[i].weight if kind == "W" else self.net[i].bias
                assert tuple(target.shape) == a.shape, (name, tuple(target.shape), a.shape)
                target.copy_(torch.from_numpy(np.ascontiguousarray(a)))

    def _canonical(self, name: str, t: torch.Tensor) -> np.ndarray:
        """A weight or gradient tensor -> canonical host array (dense W back to (in, out))."""
        a = t.detach().cpu().numpy().copy()  # on CPU .numpy() shares the live tensor's memory
        i = int(name.split(".")[0])
        if name.endswith(".W") and self.spec.layers[i].type == "dense":
            a = a.T  # (out, in) -> (in, out)
        return np.ascontiguousarray(a)

    def _named(self) -> list[tuple[str, torch.Tensor]]:
        out = []
        for i, layer in enumerate(self.spec.layers):
            if layer.has_params:
                out += [(f"{i}.W", self.net[i].weight), (f"{i}.b", self.net[i].bias)]
        return out

    # ------------------------------------------------------------------ passes
    def _loss_eager(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.loss_fn(self.net(x), y)

    def _set_train(self, train: bool) -> None:
        if self._mode is not train:
            self.net.train(train)
            self._mode = train

    def _timed(self, key: str, fn: Any, *args: Any) -> Any:
        """Call ``fn``; for a compiled model, the first call per ``key`` is the compile."""
        if not self.compiled or key in self.compile_seconds:
            return fn(*args)
        t0 = time.perf_counter()
        out = fn(*args)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.compile_seconds[key] = time.perf_counter() - t0
        LAST_COMPILE_SECONDS.clear()
        LAST_COMPILE_SECONDS.update(self.compile_seconds)
        return out

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a), dtype=self.tdtype, device=self.device)

    def _probs(self, out: torch.Tensor) -> torch.Tensor:
        return torch.softmax(out, dim=1) if self.fused_ce else out

    # ------------------------------------------------------------------ contract
    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.device_forward(self._tensor(x)).cpu().numpy()

    def device_forward(self, x: torch.Tensor) -> torch.Tensor:
        self._set_train(False)
        with torch.no_grad():
            return self._probs(self._timed("forward", self._fwd, x))

    def device_loss_and_grads(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Dropout off; the gradients stay in ``.grad`` too (``_grads`` reads the loss on the host,
        ``loss_and_grads`` makes the canonical copies)."""
        self._set_train(False)
        self.opt.zero_grad(set_to_none=True)
        loss = self._timed("eval", self._fwd_loss, x, y)
        loss.backward()
        return loss.detach(), [p.grad for p in self.net.parameters()]

    def activations(self, x: np.ndarray) -> list[np.ndarray]:
        """Every layer's output, eager (the compiled graph has no per-layer outputs)."""
        self._set_train(False)
        outs, h = [], self._tensor(x)
        with torch.no_grad():
            for mod in self.net:
                h = mod(h)
                outs.append(h.cpu().numpy())
            if self.fused_ce:
                outs.append(torch.softmax(h, dim=1).cpu().numpy())
        return outs

    def _grads(self, x: np.ndarray, y: np.ndarray) -> float:
        """Dropout off; leaves the gradients in ``.grad``; returns the loss."""
        loss, _ = self.device_loss_and_grads(self._tensor(x), self._tensor(y))
        return float(loss)

    def loss_and_grads(self, x: np.ndarray, y: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        loss = self._grads(x, y)
        return loss, {name: self._canonical(name, p.grad) for name, p in self._named()}

    def sgd_step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        loss = self._grads(x, y)
        group = self.opt.param_groups[0]
        group["lr"] = lr
        self.opt.step()
        group["lr"] = self.spec.train.lr
        return loss

    @torch.no_grad()
    def _adam_update(self) -> None:
        """Keras' Adam (``implementations.optim``) on every parameter's ``.grad``, in place."""
        from implementations.optim import adam_step_size

        tr = self.spec.train
        self.adam_t += 1
        alpha = adam_step_size(tr, self.adam_t)
        for p, (m, v) in zip(self.net.parameters(), self.adam_mv, strict=True):
            g = p.grad
            m.add_((g - m) * (1.0 - tr.beta_1))
            v.add_((g * g - v) * (1.0 - tr.beta_2))
            p.sub_((alpha * m) / (v.sqrt() + tr.epsilon))

    def _opt_step(self) -> None:
        """The spec's optimizer on the gradients in ``.grad``."""
        if self.adam:
            self._adam_update()
        else:
            self.opt.step()

    def optimizer_step(self, x: np.ndarray, y: np.ndarray) -> float:
        loss = self._grads(x, y)
        self._opt_step()
        return loss

    def params(self) -> dict[str, np.ndarray]:
        return {name: self._canonical(name, p) for name, p in self._named()}

    def to_device(self, x: np.ndarray) -> torch.Tensor:
        return self._tensor(x)

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """The loop every PyTorch tutorial writes: zero_grad, forward + loss, backward, step."""
        self._set_train(True)
        self.opt.zero_grad(set_to_none=True)
        loss = self._timed("train", self._fwd_loss, x, y)
        loss.backward()
        self._opt_step()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()


def torch_settings(device: str = "cpu", compiled: bool = False) -> dict:
    """What changes the numbers: versions, threads, oneDNN/MKL, TF32 and matmul precision."""
    threads = configure_threads()
    s: dict[str, Any] = {
        "library": f"torch {torch.__version__}",
        "device": device,
        "threads": torch.get_num_threads(),
        "configured_threads": threads,
        "interop_threads": torch.get_num_interop_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": bool(torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled),
        "mkl": torch.backends.mkl.is_available(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "tf32_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
        "tf32_cudnn": bool(torch.backends.cudnn.allow_tf32),
        "cross_entropy": "logits + nn.CrossEntropyLoss (softmax fused into the loss)",
        "train_step": "eager: zero_grad, forward + loss, backward, SGD.step",
        "compile": compiled,
    }
    if compiled:
        s["train_step"] = "torch.compile(forward + loss), eager backward launch and SGD.step"
        s["compile_backend"] = "inductor"
        s["compile_seconds"] = dict(LAST_COMPILE_SECONDS)
    return s
