"""Run profiles: budgets as data (``bench/profiles/<name>.toml``, or a path to such a file).

A profile names models, dtypes, seeds, batch sizes, rounds, accuracy budgets and timeouts, with
per-model overrides (``[model_overrides.<model>]``) and per-implementation overrides
(``[overrides.<impl>]``, narrowed by ``[overrides.<impl>.models.<model>]``), merged in that order
by ``effective_profile``. Both the orchestrator (``bench.run``) and the worker processes
(``bench.measure.worker``) read profiles through this module.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

PROFILE_DIR = Path(__file__).parents[1] / "profiles"
PARTS = ("agreement", "speed", "accuracy")
REF_PARTS = ("speed", "accuracy")  # what side B of an A/B run measures, unless the profile says ``ref_parts``


class RunError(Exception):
    """Bad input (unknown model, implementation, profile, dtype, run dir): a clear message, exit 2."""


# ---------------------------------------------------------------------- profiles
def profile_names() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path: str) -> dict[str, Any]:
    path = Path(name_or_path)
    if not (name_or_path.endswith(".toml") or "/" in name_or_path):
        path = PROFILE_DIR / f"{name_or_path}.toml"
        if not path.is_file():
            raise RunError(f"unknown profile {name_or_path!r} (known: {', '.join(profile_names())}, or a .toml path)")
    if not path.is_file():
        raise RunError(f"profile file not found: {path}")
    try:
        prof = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise RunError(f"{path}: not valid TOML: {e}") from e
    for key in ("speed", "accuracy"):
        if key not in prof:
            raise RunError(f"{path}: profile needs a [{key}] table")
    prof.setdefault("name", path.stem)
    profile_parts(prof)
    for impl, over in prof.get("overrides", {}).items():
        profile_parts(effective_profile(prof, impl))
        for model in over.get("models", {}):
            profile_parts(effective_profile(prof, impl, model))
    return prof


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


# The least speed budget the timer takes: what ``run --dry-run`` gives every case.
DRY_SPEED = {"processes": 1, "warmup_rounds": 1, "min_rounds": 1, "max_rounds": 1, "round_min_s": 0.0, "target_s": 0.0}


def effective_profile(profile: dict[str, Any], impl: str, model: str | None = None) -> dict[str, Any]:
    """The profile with ``model_overrides.<model>``, ``overrides.<impl>`` and then
    ``overrides.<impl>.models.<model>`` merged in, in that order. A side-B case of an A/B run
    (``numpy@ref``, ``bench.plan.sides``) takes its implementation's profile, its parts narrowed to
    the profile's ``ref_parts`` (default: speed and accuracy; side B's agreement is not gated)."""
    from bench.plan.sides import base_name, is_ref

    ref, impl = is_ref(impl), base_name(impl)
    out = {k: v for k, v in profile.items() if k not in ("overrides", "model_overrides")}
    if model is not None:
        out = deep_merge(out, profile.get("model_overrides", {}).get(model, {}))
    over = dict(profile.get("overrides", {}).get(impl, {}))
    models = over.pop("models", {})
    out = deep_merge(out, over)
    if model is not None and model in models:
        out = deep_merge(out, models[model])
    if out.get("dry_run"):  # run --dry-run: every speed case once, to prove the paths, not to measure
        out["speed"] = {**out.get("speed", {}), **DRY_SPEED}
    if ref:
        keep = out.get("ref_parts", REF_PARTS)
        out["parts"] = [p for p in out.get("parts", list(PARTS)) if p in keep]
    return out


def profile_parts(profile: dict[str, Any]) -> list[str]:
    """The case parts a profile runs, in the fixed order (``parts`` key; default all three)."""
    wanted = profile.get("parts", list(PARTS))
    bad = [p for p in wanted if p not in PARTS]
    if bad:
        raise RunError(f"profile {profile.get('name')!r}: unknown parts {bad} (known: {', '.join(PARTS)})")
    return [p for p in PARTS if p in wanted]
