"""Model specs: the layer vocabulary every implementation supports.

A spec is data. ``ModelSpec.from_dict`` validates a dict (the form a user's TOML or
JSON spec file holds), infers every layer's output shape and raises ``SpecError``
naming the layer index and the problem when something does not fit.
``ModelSpec.to_dict`` gives the same dict back.

Shapes are per sample: ``(C, H, W)`` for images, ``(F,)`` after ``flatten``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ACTIVATIONS = ("sigmoid", "relu", "tanh", "softmax")
LOSSES = ("mse", "cross_entropy")
PADDINGS = ("same", "valid")

# Fields each layer type takes: name -> (python type, required).
LAYER_FIELDS: dict[str, dict[str, tuple[type, bool]]] = {
    "conv2d": {"filters": (int, True), "kernel": (int, True), "padding": (str, False)},
    "maxpool2d": {"size": (int, False)},
    "flatten": {},
    "dense": {"units": (int, True)},
    "dropout": {"rate": (float, True)},
    **{a: {} for a in ACTIVATIONS},
}
PARAM_LAYERS = ("conv2d", "dense")

Shape = tuple[int, ...]


class SpecError(ValueError):
    """An invalid model spec; the message names the layer index and the problem."""


@dataclass(frozen=True)
class Layer:
    """One layer. ``args`` holds the type's fields (``filters``, ``units``, ...)."""

    type: str
    args: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["args"][name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def has_params(self) -> bool:
        return self.type in PARAM_LAYERS

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **self.args}


OPTIMIZERS = ("sgd", "adam")
INITS = ("glorot_uniform", "he_uniform")
# Keras' defaults for ``keras.optimizers.Adam``; a spec may override them.
ADAM_DEFAULTS = {"beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7}


@dataclass(frozen=True)
class TrainConfig:
    """``optimizer``: ``sgd`` (plain, ``w -= lr * g``) or ``adam`` (Keras' form: see
    ``implementations.optim``); ``beta_1``/``beta_2``/``epsilon`` are Adam's."""

    lr: float
    batch_size: int
    epochs: int
    optimizer: str = "sgd"
    beta_1: float = ADAM_DEFAULTS["beta_1"]
    beta_2: float = ADAM_DEFAULTS["beta_2"]
    epsilon: float = ADAM_DEFAULTS["epsilon"]

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"lr": self.lr, "batch_size": self.batch_size, "epochs": self.epochs}
        if self.optimizer != "sgd":
            d.update(optimizer=self.optimizer, beta_1=self.beta_1, beta_2=self.beta_2, epsilon=self.epsilon)
        return d


@dataclass(frozen=True)
class ModelSpec:
    name: str
    input_shape: tuple[int, int, int]  # (C, H, W)
    loss: str
    layers: tuple[Layer, ...]
    train: TrainConfig
    description: str = ""
    # Kernel initialiser (biases are zero): ``glorot_uniform`` for every kernel (Keras'
    # default), or ``he_uniform`` for kernels followed by relu (Glorot for the others).
    init: str = "glorot_uniform"

    # ---------------------------------------------------------------- building
    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        if not isinstance(d, dict):
            raise SpecError(f"a spec is a mapping, got {type(d).__name__}")
        for key in ("name", "input_shape", "loss", "layers", "train"):
            if key not in d:
                raise SpecError(f"spec: missing field {key!r}")
        unknown = set(d) - {"name", "input_shape", "loss", "layers", "train", "description", "init"}
        if unknown:
            raise SpecError(f"spec: unknown fields {sorted(unknown)}")
        shape = d["input_shape"]
        if (
            not isinstance(shape, (list, tuple))
            or len(shape) != 3
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)
        ):
            raise SpecError(f"spec: input_shape must be [C, H, W] positive ints, got {shape!r}")
        if d["loss"] not in LOSSES:
            raise SpecError(f"spec: loss must be one of {LOSSES}, got {d['loss']!r}")
        if not isinstance(d["layers"], (list, tuple)) or not d["layers"]:
            raise SpecError("spec: layers must be a non-empty list")
        layers = tuple(_parse_layer(i, ld) for i, ld in enumerate(d["layers"]))
        init = d.get("init", "glorot_uniform")
        if init not in INITS:
            raise SpecError(f"spec: init must be one of {INITS}, got {init!r}")
        spec = cls(
            name=str(d["name"]),
            input_shape=tuple(shape),  # type: ignore[arg-type]
            loss=d["loss"],
            layers=layers,
            train=_parse_train(d["train"]),
            description=str(d.get("description", "")),
            init=init,
        )
        spec.shapes()  # validates shapes; raises SpecError
        return spec

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "loss": self.loss,
            "layers": [layer.to_dict() for layer in self.layers],
            "train": self.train.to_dict(),
            "init": self.init,
        }
        if self.description:
            d["description"] = self.description
        return d

    def replace(self, **changes: Any) -> ModelSpec:
        d = self.to_dict()
        d.update(changes)
        return ModelSpec.from_dict(d)

    # ---------------------------------------------------------------- shapes
    def shapes(self) -> list[Shape]:
        """Per-sample output shape of every layer (index i -> output of layer i)."""
        out: list[Shape] = []
        shape: Shape = tuple(self.input_shape)
        for i, layer in enumerate(self.layers):
            shape = _infer(i, layer, shape, last=i == len(self.layers) - 1)
            out.append(shape)
        last = len(self.layers) - 1
        if len(out[-1]) != 1:
            raise SpecError(f"layer {last}: the model must end in a vector, got {out[-1]}")
        if self.loss == "cross_entropy" and self.layers[-1].type != "softmax":
            raise SpecError(f"layer {last}: cross_entropy needs a softmax as the last layer")
        return out

    def input_shapes(self) -> list[Shape]:
        """Per-sample input shape of every layer."""
        return [tuple(self.input_shape), *self.shapes()[:-1]]

    @property
    def num_classes(self) -> int:
        return self.shapes()[-1][0]

    @property
    def first_param_layer(self) -> int:
        """Index of the first layer with parameters (0 if none). Its input, and every layer's
        below it, needs no gradient: no backend computes one, and ``flops`` counts none."""
        return min((i for i, layer in enumerate(self.layers) if layer.has_params), default=0)

    def param_shapes(self) -> dict[str, Shape]:
        """Canonical parameter names and layouts (see ``bench.core.params``)."""
        shapes: dict[str, Shape] = {}
        for i, (layer, inp) in enumerate(zip(self.layers, self.input_shapes(), strict=True)):
            if layer.type == "dense":
                shapes[f"{i}.W"] = (inp[0], layer.units)  # (in, out)
                shapes[f"{i}.b"] = (layer.units,)
            elif layer.type == "conv2d":
                shapes[f"{i}.W"] = (layer.filters, inp[0], layer.kernel, layer.kernel)  # (O, I, kh, kw)
                shapes[f"{i}.b"] = (layer.filters,)
        return shapes

    def num_params(self) -> int:
        n = 0
        for s in self.param_shapes().values():
            k = 1
            for d in s:
                k *= d
            n += k
        return n

    def flops(self, batch: int = 1) -> dict[str, int]:
        """FLOP count (multiply and add counted apart) for one batch.

        What each phase performs, not a nominal 3x: ``forward`` counts the GEMM/conv
        multiply-adds (2 FLOPs each) plus one FLOP per element for bias, activation and pooling
        comparisons. ``backward`` counts the weight gradient of every dense/conv layer (its
        forward GEMM work again) and the input gradient of every such layer but the first (the
        network's input needs no gradient, and no backend computes it), plus twice the
        elementwise terms; ``update`` one multiply-add per parameter (plain SGD).
        ``train_step`` is their sum.
        """
        fwd_mm = fwd_elem = first_mm = 0
        for layer, inp, out in zip(self.layers, self.input_shapes(), self.shapes(), strict=True):
            n_out = _prod(out)
            mm = 0
            if layer.type == "dense":
                mm = 2 * inp[0] * layer.units
                fwd_elem += layer.units
            elif layer.type == "conv2d":
                mm = 2 * n_out * inp[0] * layer.kernel * layer.kernel
                fwd_elem += n_out
            elif layer.type in ACTIVATIONS or layer.type == "maxpool2d":
                fwd_elem += _prod(inp)
            if mm and not fwd_mm:
                first_mm = mm  # the first parameter layer: no input gradient
            fwd_mm += mm
        fwd = batch * (fwd_mm + fwd_elem)
        bwd = batch * (2 * fwd_mm - first_mm + 2 * fwd_elem)
        upd = 2 * self.num_params()
        return {"forward": fwd, "backward": bwd, "update": upd, "train_step": fwd + bwd + upd}

    def traffic(self, batch: int = 1, itemsize: int = 4) -> dict[str, dict[str, int]]:
        """Compulsory memory traffic of each timed phase, in bytes, and its working set.

        A lower bound, counted from the spec like ``flops``, at ``itemsize`` bytes a value:
        ``P`` the parameters, ``X`` the input batch, ``A`` every layer output (``flatten`` is a
        view; ``dropout`` is the identity outside training, so ``forward`` writes none).

        - ``forward``: read P and X, write A: ``P + X + A``;
        - ``loss_and_grads``: that, A re-read by the backward pass and the gradients written:
          ``2P + X + 2A``;
        - ``train_step``: that and the updated parameters written: ``3P + X + 2A``.

        Gradients of the activations, the dropout masks and the labels are left out (a fused
        kernel can keep them in registers or cache), so an implementation cannot need less
        unless it skips a pass the count assumes. ``working_set`` is the distinct bytes the
        phase touches (``P + X + A``, plus the gradients ``P`` when it computes them): the
        memory level it fits in is the roof it runs under.
        """
        p = self.num_params() * itemsize
        x = batch * _prod(tuple(self.input_shape)) * itemsize

        def outputs(training: bool) -> int:
            skip = ("flatten",) if training else ("flatten", "dropout")
            return (
                batch
                * itemsize
                * sum(_prod(s) for lay, s in zip(self.layers, self.shapes(), strict=True) if lay.type not in skip)
            )

        a_inf, a = outputs(False), outputs(True)
        return {
            "forward": {"bytes": p + x + a_inf, "working_set": p + x + a_inf},
            "loss_and_grads": {"bytes": 2 * p + x + 2 * a, "working_set": 2 * p + x + a},
            "train_step": {"bytes": 3 * p + x + 2 * a, "working_set": 2 * p + x + a},
        }


def _prod(shape: Shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _parse_layer(i: int, ld: Any) -> Layer:
    if not isinstance(ld, dict) or "type" not in ld:
        raise SpecError(f"layer {i}: a layer is a mapping with a 'type', got {ld!r}")
    kind = ld["type"]
    if kind not in LAYER_FIELDS:
        raise SpecError(f"layer {i}: unknown layer type {kind!r} (known: {sorted(LAYER_FIELDS)})")
    fields = LAYER_FIELDS[kind]
    extra = set(ld) - {"type"} - set(fields)
    if extra:
        raise SpecError(f"layer {i} ({kind}): unknown fields {sorted(extra)}")
    args: dict[str, Any] = {}
    for name, (typ, required) in fields.items():
        if name not in ld:
            if required:
                raise SpecError(f"layer {i} ({kind}): missing field {name!r}")
            continue
        value = ld[name]
        if typ is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, typ) or isinstance(value, bool):
            raise SpecError(f"layer {i} ({kind}): {name} must be {typ.__name__}, got {value!r}")
        args[name] = value
    if kind == "conv2d":
        args.setdefault("padding", "same")
        if args["filters"] <= 0:
            raise SpecError(f"layer {i} (conv2d): filters must be positive, got {args['filters']}")
        if args["kernel"] <= 0 or args["kernel"] % 2 == 0:
            raise SpecError(f"layer {i} (conv2d): kernel must be a positive odd int, got {args['kernel']}")
        if args["padding"] not in PADDINGS:
            raise SpecError(f"layer {i} (conv2d): padding must be one of {PADDINGS}, got {args['padding']!r}")
    elif kind == "maxpool2d":
        args.setdefault("size", 2)
        if args["size"] != 2:
            raise SpecError(f"layer {i} (maxpool2d): only size 2 (stride 2) is supported, got {args['size']}")
    elif kind == "dense" and args["units"] <= 0:
        raise SpecError(f"layer {i} (dense): units must be positive, got {args['units']}")
    elif kind == "dropout" and not 0.0 <= args["rate"] < 1.0:
        raise SpecError(f"layer {i} (dropout): rate must be in [0, 1), got {args['rate']}")
    return Layer(kind, args)


def _parse_train(t: Any) -> TrainConfig:
    if not isinstance(t, dict):
        raise SpecError(f"train: must be a mapping, got {t!r}")
    for key in ("lr", "batch_size", "epochs"):
        if key not in t:
            raise SpecError(f"train: missing field {key!r}")
    extra = set(t) - {"lr", "batch_size", "epochs", "optimizer", *ADAM_DEFAULTS}
    if extra:
        raise SpecError(f"train: unknown fields {sorted(extra)}")
    opt = t.get("optimizer", "sgd")
    if opt not in OPTIMIZERS:
        raise SpecError(f"train: optimizer must be one of {OPTIMIZERS}, got {opt!r}")
    if opt == "sgd" and set(t) & set(ADAM_DEFAULTS):
        raise SpecError(f"train: {sorted(set(t) & set(ADAM_DEFAULTS))} apply to adam only")
    adam = {k: t.get(k, v) for k, v in ADAM_DEFAULTS.items()}
    for k, v in adam.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not (0 < v < 1):
            raise SpecError(f"train: {k} must be a number in (0, 1), got {v!r}")
    lr, bs, ep = t["lr"], t["batch_size"], t["epochs"]
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or lr <= 0:
        raise SpecError(f"train: lr must be a positive number, got {lr!r}")
    if not isinstance(bs, int) or isinstance(bs, bool) or bs <= 0:
        raise SpecError(f"train: batch_size must be a positive int, got {bs!r}")
    if not isinstance(ep, int) or isinstance(ep, bool) or ep <= 0:
        raise SpecError(f"train: epochs must be a positive int, got {ep!r}")
    return TrainConfig(float(lr), bs, ep, opt, *(float(adam[k]) for k in ADAM_DEFAULTS))


def _infer(i: int, layer: Layer, shape: Shape, last: bool) -> Shape:
    kind = layer.type
    if kind == "softmax" and not last:
        raise SpecError(f"layer {i} (softmax): softmax is only supported as the last layer")
    if kind in ("conv2d", "maxpool2d") and len(shape) != 3:
        raise SpecError(f"layer {i} ({kind}): needs a (C, H, W) input, got {shape}")
    if kind == "conv2d":
        c, h, w = shape
        k = layer.kernel
        if layer.padding == "same":
            return (layer.filters, h, w)
        if h < k or w < k:
            raise SpecError(f"layer {i} (conv2d): kernel {k} does not fit a {h}x{w} input with valid padding")
        return (layer.filters, h - k + 1, w - k + 1)
    if kind == "maxpool2d":
        c, h, w = shape
        if h < 2 or w < 2:
            raise SpecError(f"layer {i} (maxpool2d): a {h}x{w} input is too small to pool")
        return (c, h // 2, w // 2)  # floor: 7x7 -> 3x3
    if kind == "flatten":
        return (_prod(shape),)
    if kind == "dense":
        if len(shape) != 1:
            raise SpecError(f"layer {i} (dense): needs a flat input, got {shape}; add a flatten layer")
        return (layer.units,)
    return shape  # activations, dropout
