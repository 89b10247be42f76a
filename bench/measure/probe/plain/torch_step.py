"""Plain PyTorch training step for the `mlp` / `cnn` presets, with no harness around it.

Standalone on purpose (imports nothing from nnbench): the model is written by hand the
way a PyTorch user writes it, and the loop is the tutorial loop. It prints steps/s, the
figure ``implementations.torch``'s ``train_step`` must be within 10% of.

    NNBENCH_THREADS=2 python bench/measure/probe/plain/torch_step.py --preset cnn [--compile]
"""

import argparse
import os
import time

import numpy as np
import torch
from torch import nn


def make_model(preset: str) -> nn.Sequential:
    if preset == "mlp":  # 784-800-800-10 sigmoid, dropout 0.4, softmax
        return nn.Sequential(
            nn.Flatten(),
            nn.Linear(784, 800), nn.Sigmoid(), nn.Dropout(0.4),
            nn.Linear(800, 800), nn.Sigmoid(), nn.Dropout(0.4),
            nn.Linear(800, 10), nn.Softmax(dim=1),
        )  # fmt: skip
    return nn.Sequential(  # conv 32-64-128 3x3 same relu + 2x2 pool, dense 200 relu, softmax
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(128 * 3 * 3, 200), nn.ReLU(), nn.Linear(200, 10), nn.Softmax(dim=1),
    )  # fmt: skip


def make_batches(batch: int, n: int = 10) -> list[tuple[torch.Tensor, torch.Tensor]]:
    rng = np.random.default_rng(0)
    return [
        (torch.tensor(rng.random((batch, 1, 28, 28)), dtype=torch.float32),
         torch.tensor(np.eye(10)[rng.integers(0, 10, batch)], dtype=torch.float32))
        for _ in range(n)
    ]  # fmt: skip


def make_step(preset: str, compile: bool = False):
    """The model, its loss and optimizer, and ``step(x, y)``: zero_grad, forward + loss,
    backward, SGD step (forward + loss through ``torch.compile`` with ``compile``)."""
    lr = {"mlp": 0.1, "cnn": 0.008}[preset]
    model = make_model(preset)
    loss_fn = nn.MSELoss()
    opt = torch.optim.SGD(model.parameters(), lr=lr)

    def forward_loss(x, y):
        return loss_fn(model(x), y)

    if compile:
        forward_loss = torch.compile(forward_loss)
    model.train()

    def step(x, y) -> None:
        opt.zero_grad(set_to_none=True)
        loss = forward_loss(x, y)
        loss.backward()
        opt.step()

    return step


def set_threads() -> None:
    torch.set_num_threads(int(os.environ.get("NNBENCH_THREADS", os.cpu_count())))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


def time_steps(step, batches, n: int) -> float:
    """Steps per second of ``n`` calls of ``step`` cycling over ``batches``: this script's own
    tutorial loop, kept because the script is standalone (no nnbench import) on purpose.
    The harness comparison (``bench.measure.probe.plain.compare``) times both sides with
    ``bench.measure.timing.Timer`` instead."""
    t0 = time.perf_counter()
    for i in range(n):
        step(*batches[i % len(batches)])
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", choices=("mlp", "cnn"), default="mlp")
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--compile", action="store_true")
    a = ap.parse_args()
    set_threads()
    step, batches = make_step(a.preset, a.compile), make_batches(a.batch)
    t0 = time.perf_counter()
    time_steps(step, batches, 3)  # warm-up (and compile)
    warm = time.perf_counter() - t0
    rates = [time_steps(step, batches, a.steps) for _ in range(a.repeats)]
    print(f"plain torch{'-compile' if a.compile else ''} {a.preset}: best {max(rates):.1f} steps/s, "
          f"median {sorted(rates)[len(rates) // 2]:.1f} steps/s, warm-up {warm:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
