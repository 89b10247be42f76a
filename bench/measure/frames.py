"""A run's records as tidy pandas frames: what every report reads.

``load_run(run_dir)`` reads ``run.json`` and ``results.jsonl`` (``bench.measure.results``) into one
tidy ``pandas.DataFrame`` per record kind (one row per measurement, every column of the
kind present even when no record filled it). The run metadata is flattened (nested keys
joined with ``.``) and joined onto every row: the machine as ``env.<key>`` columns (CPU model,
cores, threads, BLAS, library versions, GPU, git commit, ... whatever ``bench.measure.envinfo``
recorded), the run's settings as ``run.<key>`` (``run.threads``, ``run.profile.name``, ...).
Derived speed columns a record lacks (a run cut short) are filled by the run's own
``bench.measure.derived.fill_derived``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from bench.measure.derived import DERIVED_COLUMNS, fill_derived
from bench.measure.results import COMMON, KIND_COLUMNS, RESULTS_FILE, RUN_FILE, SchemaError, check_version, read_records

ENV_PREFIX = "env."  # run.json's machine description (its "env"): env.hostname, env.cpu_model, ...
RUN_PREFIX = "run."  # run.json's other keys: run.threads, run.started, run.profile.name, ...
# left to run.json: joined onto every row they would make the tidy tables mostly repeated text
BULKY_META = ("profile.", "specs.", "registry.", "argv")
SPEED_KEYS = ["model", "dtype", "phase", "batch_size"]  # a speed case, with its impl


class RunDirError(ValueError):
    """The path is not a readable run directory."""


def resolve_run_dir(path: str | Path) -> Path:
    """A run directory, following ``reports/latest`` whether it is a symlink or a small
    text file holding the run's path (relative to its own folder)."""
    p = Path(path)
    if p.is_file() and p.name != RESULTS_FILE and p.stat().st_size < 4096:
        target = p.read_text(encoding="utf-8").strip()
        if target:
            q = Path(target)
            p = q if q.is_absolute() else p.parent / q
    if not p.exists():
        raise RunDirError(f"run directory not found: {path}")
    if not p.is_dir():
        raise RunDirError(f"not a run directory (not a folder): {path}")
    if not (p / RESULTS_FILE).is_file():
        raise RunDirError(f"not a run directory (no {RESULTS_FILE}): {path}")
    return p


def read_run_meta(run_dir: Path) -> dict[str, Any]:
    """``run.json`` (``{}`` when absent: a run that died before writing it is still read)."""
    path = run_dir / RUN_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SchemaError(f"{path}: not JSON: {e}") from e
    if not isinstance(meta, dict):
        raise SchemaError(f"{path}: expected a JSON object")
    if "schema_version" in meta:
        check_version(meta["schema_version"], str(path))
    return meta


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> ``{"a.b": scalar}``; lists become JSON text."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = json.dumps(v, default=str)
        else:
            out[key] = v
    return out


def load_run(run_dir: str | Path) -> dict[str, pd.DataFrame]:
    """One tidy DataFrame per record kind present, env columns joined in.

    Raises ``RunDirError`` (not a run dir) or ``SchemaError`` (newer or malformed schema).
    """
    rd = resolve_run_dir(run_dir)
    return frames_from_records(read_records(rd), read_run_meta(rd))


def frames_from_records(records: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """``load_run`` without the files: records grouped by kind, run.json flattened in."""
    env = meta_columns(meta)
    # the derived speed columns a record lacks (a run cut short), as the run computes them
    records = fill_derived([dict(r) for r in records], overwrite=False)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_kind.setdefault(str(rec.get("kind")), []).append(rec)
    frames: dict[str, pd.DataFrame] = {}
    for kind, recs in by_kind.items():
        cols = list(COMMON) + list(KIND_COLUMNS.get(kind, ()))
        extra = sorted({k for r in recs for k in r} - set(cols))
        df = pd.DataFrame.from_records(recs, columns=cols + extra)
        if df["run_id"].isna().all() and "run_id" in meta:
            df["run_id"] = meta["run_id"]
        if env:
            df = pd.concat([df, pd.DataFrame({k: [v] * len(df) for k, v in env.items()}, index=df.index)], axis=1)
        frames[kind] = df
    if "speed" in frames:
        speed = frames["speed"]
        for c in ("median_s", "batch_size", "gflops", "gflops_model", "bytes", *DERIVED_COLUMNS):
            if c == "bound":  # the roofline's binding term: text
                continue
            speed[c] = pd.to_numeric(speed[c], errors="coerce")
    return frames


def meta_columns(meta: dict[str, Any]) -> dict[str, Any]:
    """run.json as columns, each named once: ``env.<key>`` for the machine (run.json's ``env``),
    ``run.<key>`` for the rest, less the bulky parts (``BULKY_META``) but the profile's name."""
    cols = {}
    for k, v in flatten(meta).items():
        if not k.startswith(BULKY_META):
            cols[k if k.startswith(ENV_PREFIX) else RUN_PREFIX + k] = v
    if isinstance(meta.get("profile"), dict) and "name" in meta["profile"]:
        cols[RUN_PREFIX + "profile.name"] = meta["profile"]["name"]
    return cols


def run_meta(frames: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """The flattened run.json back from any frame's ``env.``/``run.`` columns, keyed as ``flatten``
    keys it (``env.cpu_model``, ``threads``, ``profile.name``)."""
    for df in frames.values():
        if len(df):
            meta = {c: df[c].iloc[0] for c in df.columns if c.startswith(ENV_PREFIX)}
            meta |= {c[len(RUN_PREFIX) :]: df[c].iloc[0] for c in df.columns if c.startswith(RUN_PREFIX)}
            return meta
    return {}
