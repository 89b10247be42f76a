"""nnbench_dense: a dense-only NumPy backend shipped as its own package (docs/backends.md)."""

import numpy as np

from bench.core.model import Model, check_supported

REQUIRES: tuple[str, ...] = ()  # no GPU needed
LAYERS = ("flatten", "dense", "sigmoid", "tanh", "relu", "dropout", "softmax")
ACT = {  # activation -> (function, derivative from its output)
    "sigmoid": (lambda z: 1 / (1 + np.exp(-z)), lambda a: a * (1 - a)),
    "tanh": (np.tanh, lambda a: 1 - a * a),
    "relu": (lambda z: np.maximum(z, 0), lambda a: a > 0),
}


def available() -> tuple[bool, str]:
    return True, f"numpy {np.__version__}"


def settings() -> dict:
    return {"numpy": np.__version__}


def build(spec, params, dtype="float32", seed=0):
    check_supported("nnbench_dense", spec, dtype, layers=LAYERS)
    if spec.train.optimizer != "sgd":
        raise NotImplementedError(f"nnbench_dense: optimizer {spec.train.optimizer!r} not supported")
    return DenseModel(spec, params, dtype, seed)


class DenseModel(Model):
    def __init__(self, spec, params, dtype, seed):
        self.spec, self.dtype, self.rng = spec, dtype, np.random.default_rng(seed)
        self.p = {k: np.array(v, dtype=dtype) for k, v in params.items()}

    def _run(self, x, drop):  # every layer's output (the input first), dropout masks by layer
        outs, masks = [np.asarray(x, self.dtype).reshape(len(x), -1)], {}
        for i, layer in enumerate(self.spec.layers):
            a = outs[-1]
            if layer.type == "dense":
                a = a @ self.p[f"{i}.W"] + self.p[f"{i}.b"]  # (N, in) @ (in, out)
            elif layer.type in ACT:
                a = ACT[layer.type][0](a)
            elif layer.type == "softmax":
                e = np.exp(a - a.max(axis=1, keepdims=True))
                a = e / e.sum(axis=1, keepdims=True)
            elif layer.type == "dropout" and drop:
                masks[i] = (self.rng.random(a.shape) >= layer.rate) / (1 - layer.rate)
                a = a * masks[i]
            outs.append(a)
        return outs, masks

    def _grads(self, x, y, drop):
        outs, masks = self._run(x, drop)
        p, y, n = outs[-1], np.asarray(y, self.dtype), len(x)
        if self.spec.loss == "mse":  # mean over every element, as Keras
            loss, d = ((p - y) ** 2).mean(), 2 * (p - y) / p.size
        else:  # cross-entropy after a softmax: its gradient from the logits is (p - y) / N
            loss, d = -(y * np.log(p)).sum() / n, None
        grads = {}
        for i in reversed(range(len(self.spec.layers))):
            layer, a_in, a = self.spec.layers[i], outs[i], outs[i + 1]
            if layer.type == "softmax":
                d = (p - y) / n if d is None else a * (d - (d * a).sum(axis=1, keepdims=True))
            elif layer.type in ACT:
                d = d * ACT[layer.type][1](a)
            elif layer.type == "dropout":
                d = d * masks.get(i, 1)
            elif layer.type == "dense":
                grads[f"{i}.W"], grads[f"{i}.b"] = a_in.T @ d, d.sum(axis=0)
                d = d @ self.p[f"{i}.W"].T
        return float(loss), grads

    def _step(self, x, y, lr, drop):
        loss, grads = self._grads(x, y, drop)
        for k, g in grads.items():
            self.p[k] -= lr * g
        return loss

    def forward(self, x):
        return self._run(x, False)[0][-1]

    device_forward = forward  # host NumPy arrays are this backend's device arrays

    def device_loss_and_grads(self, x, y):
        return self._grads(x, y, False)

    def activations(self, x):
        return self._run(x, False)[0][1:]

    def loss_and_grads(self, x, y):
        return self._grads(x, y, False)

    def sgd_step(self, x, y, lr):
        return self._step(x, y, lr, False)

    def train_step(self, x, y):
        self._step(x, y, self.spec.train.lr, True)

    def params(self):
        return {k: v.copy() for k, v in self.p.items()}
