"""Plain Keras (TensorFlow backend) training step for the `mlp` / `cnn` presets, with no
harness around it.

Standalone on purpose (imports nothing from nnbench): the model is written as in the
course (``Dense(800, activation="sigmoid")`` ...), and ``--step`` picks one of the four
ways to run a step: ``train_on_batch`` on a compiled model (with or without XLA), or a
``tf.function`` GradientTape step (with or without XLA). It prints steps/s, the figure
``implementations.keras``'s ``train_step`` must be within 10% of.

    NNBENCH_THREADS=2 python bench/measure/probe/plain/keras_step.py --preset cnn --step all
"""

import argparse
import os
import time

os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

STEPS = ("train_on_batch", "train_on_batch_xla", "tf_function", "tf_function_xla")


def make_model(keras, preset: str):
    L = keras.layers
    if preset == "mlp":
        return keras.Sequential([
            keras.Input((28, 28, 1)), L.Flatten(),
            L.Dense(800, activation="sigmoid"), L.Dropout(0.4),
            L.Dense(800, activation="sigmoid"), L.Dropout(0.4),
            L.Dense(10, activation="softmax"),
        ])  # fmt: skip
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        L.Conv2D(32, 3, padding="same", activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(64, 3, padding="same", activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(128, 3, padding="same", activation="relu"), L.MaxPooling2D(2),
        L.Flatten(), L.Dense(200, activation="relu"), L.Dense(10, activation="softmax"),
    ])  # fmt: skip


def set_threads() -> None:
    """Before TF's first op: intra-op = NNBENCH_THREADS, inter-op 1 (as the harness)."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(int(os.environ.get("NNBENCH_THREADS", os.cpu_count())))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already set in this process
        pass


def make_batches(batch: int, n: int = 10) -> list:
    rng = np.random.default_rng(0)
    return [
        (tf.constant(rng.random((batch, 28, 28, 1)), dtype=tf.float32),
         tf.constant(np.eye(10)[rng.integers(0, 10, batch)], dtype=tf.float32))
        for _ in range(n)
    ]  # fmt: skip


def make_step(preset: str, kind: str):
    """``step(x, y)`` of the course model, run the ``kind`` way (see the module docstring)."""
    import keras

    lr = {"mlp": 0.1, "cnn": 0.008}[preset]
    model = make_model(keras, preset)
    opt = keras.optimizers.SGD(learning_rate=lr)
    xla = kind.endswith("_xla")
    if kind.startswith("train_on_batch"):
        model.compile(optimizer=opt, loss="mse", jit_compile=xla)
        return model.train_on_batch
    loss_fn = keras.losses.MeanSquaredError()

    @tf.function(jit_compile=xla)
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)

    return step


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
    ap.add_argument("--step", choices=(*STEPS, "all"), default="tf_function",
                    help="'all' times every kind, interleaved in rounds, in this one process")  # fmt: skip
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=50)
    a = ap.parse_args()
    set_threads()
    kinds = STEPS if a.step == "all" else (a.step,)
    batches = make_batches(a.batch)
    steps, warm, rates = {}, {}, {k: [] for k in kinds}
    for k in kinds:
        steps[k] = make_step(a.preset, k)
        t0 = time.perf_counter()
        time_steps(steps[k], batches, 3)  # warm-up (traces / compiles)
        warm[k] = time.perf_counter() - t0
    for _ in range(a.repeats):
        for k in kinds:
            rates[k].append(time_steps(steps[k], batches, a.steps))
    for k in kinds:
        r = sorted(rates[k])
        print(f"plain keras {k} {a.preset}: best {r[-1]:.1f} steps/s, median {r[len(r) // 2]:.1f} steps/s, "
              f"warm-up {warm[k]:.2f} s")  # fmt: skip


if __name__ == "__main__":
    main()
