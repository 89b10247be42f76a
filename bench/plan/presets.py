"""Spec files and the shipped presets (``bench/specs/*.toml``): names and paths to ``ModelSpec``s,
and ``random_spec``, the small random specs the conformance suite runs every backend on."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from bench.core.spec import LOSSES, PADDINGS, ModelSpec, SpecError

SPEC_DIR = Path(__file__).resolve().parent.parent / "specs"


# -------------------------------------------------------------------- spec files
def load_spec_file(path: str | Path) -> ModelSpec:
    """Load a spec from a ``.toml`` or ``.json`` file."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file not found: {path}")
    text = path.read_bytes()
    try:
        if path.suffix == ".toml":
            d = tomllib.loads(text.decode())
        elif path.suffix == ".json":
            d = json.loads(text)
        else:
            raise SpecError(f"{path}: spec files are .toml or .json")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SpecError(f"{path}: not valid {path.suffix[1:].upper()}: {e}") from e
    try:
        return ModelSpec.from_dict(d)
    except SpecError as e:
        raise SpecError(f"{path}: {e}") from e


def preset_names() -> list[str]:
    return sorted(p.stem for p in SPEC_DIR.glob("*.toml"))


def preset(name: str) -> ModelSpec:
    """A shipped preset (``mlp``, ``cnn``, ``mlp-relu``, ``tiny-mlp``, ``tiny-cnn``)."""
    path = SPEC_DIR / f"{name}.toml"
    if not path.is_file():
        raise SpecError(f"unknown preset {name!r} (known: {', '.join(preset_names())})")
    return load_spec_file(path)


def resolve(name_or_path: str) -> ModelSpec:
    """A preset name, or a path to a spec file."""
    if name_or_path.endswith((".toml", ".json")) or "/" in name_or_path:
        return load_spec_file(name_or_path)
    return preset(name_or_path)


def random_spec(seed: int) -> ModelSpec:
    """A small random valid spec (odd sizes, both paddings, pools that floor, every layer
    type and both losses across seeds), for property tests of any implementation."""
    import random

    rng = random.Random(seed)
    for _ in range(100):
        c, h, w = rng.choice([1, 2, 3]), rng.randint(5, 11), rng.randint(5, 11)
        layers: list[dict[str, Any]] = []
        for _ in range(rng.choice([0, 1, 1, 2])):
            layers.append(
                {
                    "type": "conv2d",
                    "filters": rng.randint(1, 5),
                    "kernel": rng.choice([1, 3, 3, 5]),
                    "padding": rng.choice(PADDINGS),
                }
            )
            layers.append({"type": rng.choice(["relu", "tanh", "sigmoid"])})
            if rng.random() < 0.7:
                layers.append({"type": "maxpool2d", "size": 2})
        layers.append({"type": "flatten"})
        for _ in range(rng.choice([0, 1, 2])):
            layers.append({"type": "dense", "units": rng.randint(3, 13)})
            layers.append({"type": rng.choice(["relu", "tanh", "sigmoid"])})
            if rng.random() < 0.4:
                layers.append({"type": "dropout", "rate": 0.3})
        layers += [{"type": "dense", "units": rng.choice([3, 10])}, {"type": "softmax"}]
        d = {
            "name": f"random-{seed}",
            "input_shape": [c, h, w],
            "loss": rng.choice(LOSSES),
            "layers": layers,
            "train": {"lr": 0.05, "batch_size": 4, "epochs": 1},
        }
        try:
            return ModelSpec.from_dict(d)
        except SpecError:
            continue
    raise RuntimeError(f"no valid random spec for seed {seed}")  # pragma: no cover
