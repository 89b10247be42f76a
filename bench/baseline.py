"""``python -m bench baseline RUN [RUN ...] --out DIR``: one gate baseline from several runs.

The gate judges a speed case by its fastest worker process (``bench.compare.center``), so a
baseline case whose processes *all* ran through a neighbour's burst would make every later run
look faster, or its other implementations slower, until the baseline is replaced. Merging
the speed records of a few runs of the same profile on the same machine into one baseline
(3 runs x 3 processes: 9 per case) makes that vanishingly rare. Records merged:

- ``speed``: every run's, the process index offset so that each stays its own process;
- ``peak``: every run's (the GEMM before and after each run's cases);
- (each merged record takes the first run's ``run_id``: the baseline is read as one run);
- everything else (agreement, accuracy, availability, errors, compile, settings): the first
  run's, as is.

``run.json`` is the first run's, with ``merged_from`` listing the run ids. Runs of different
profiles, thread counts, pinning, CPU models or commits are refused: a baseline is one
configuration.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

from bench.results import RUN_FILE, append_records, read_records

SAME = ("threads", "cpus")  # run.json keys that must agree
SAME_ENV = ("cpu_model", "git_commit", "malloc", "blas_wait")  # run.json env keys that must agree
MERGED_KINDS = ("speed", "peak")


class BaselineError(Exception):
    """Runs that cannot form one baseline; the message says which key differs."""


def _meta(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise BaselineError(f"{run_dir}: not a run directory (no {RUN_FILE})")
    return json.loads(path.read_text(encoding="utf-8"))


def _profile_name(meta: dict[str, Any]) -> Any:
    profile = meta.get("profile")
    return profile.get("name") if isinstance(profile, dict) else profile


def _check_same(metas: list[tuple[Path, dict[str, Any]]]) -> None:
    for run_dir, meta in metas:
        if meta.get("injected_slowdown"):
            raise BaselineError(f"{run_dir} is a gate-validation run (injected slowdown): not a baseline")
    (first_dir, first), *rest = metas
    for run_dir, meta in rest:
        pairs = [("profile.name", _profile_name(first), _profile_name(meta))]
        pairs += [(k, first.get(k), meta.get(k)) for k in SAME]
        pairs += [(f"env.{k}", first.get("env", {}).get(k), meta.get("env", {}).get(k)) for k in SAME_ENV]
        for key, a, b in pairs:
            if a != b:
                raise BaselineError(f"{run_dir} differs from {first_dir} in {key}: {b!r} != {a!r}")


def merge(run_dirs: list[Path], out: Path) -> int:
    """Write the merged baseline to ``out`` (replaced if it exists); returns the speed records."""
    metas = [(d, _meta(d)) for d in run_dirs]
    _check_same(metas)
    records = read_records(run_dirs[0])
    offset = 1 + max((int(r.get("process") or 0) for r in records if r["kind"] == "speed"), default=-1)
    for d in run_dirs[1:]:
        extra = [r for r in read_records(d) if r["kind"] in MERGED_KINDS]
        for r in extra:
            r["run_id"] = metas[0][1].get("run_id", r.get("run_id"))  # one run, as the loaders expect
            if r["kind"] == "speed":
                r["process"] = int(r.get("process") or 0) + offset
        offset = 1 + max((int(r["process"]) for r in extra if r["kind"] == "speed"), default=offset - 1)
        records += extra
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    meta = metas[0][1] | {"merged_from": [m.get("run_id", str(d)) for d, m in metas]}
    (out / RUN_FILE).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    append_records(out, records)
    return sum(r["kind"] == "speed" for r in records)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench baseline", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run directories of one profile on one machine")
    ap.add_argument("--out", required=True, help="baseline directory to write (e.g. bench/baselines/quick)")
    args = ap.parse_args(argv)
    try:
        n = merge([Path(r) for r in args.runs], Path(args.out))
    except BaselineError as e:
        print(f"error: {e}")
        return 2
    print(f"baseline {args.out}: {len(args.runs)} runs, {n} speed records")
    return 0
