"""``python -m bench run``: the benchmark run (what ``tox -e bench`` calls).

Profiles are data (``bench/profiles/<name>.toml``, or a path to such a file): models, dtypes,
seeds, batch sizes, rounds, accuracy budgets and timeouts, with per-implementation overrides
(``[overrides.<impl>]``, narrowed by ``[overrides.<impl>.models.<model>]``; ``bench.plan.profile``).

A run lives in ``<out>/<run_id>/`` (``runs/`` by default, git-ignored; committed reports live
in ``reports/``): ``run.json`` (config, profile, specs, environment),
``results.jsonl`` (``bench.measure.results`` records), ``cases.jsonl`` (which case parts are done,
``bench.measure.run_state``), ``benchmarks/*.json`` (pytest-benchmark JSON) and ``logs/`` (each
worker's stderr).

This module is the command: it checks the input, creates the run directory (or finds the one
to resume), has ``bench.measure.run_cases`` measure every case part not done yet (one worker process
per case, ``bench.measure.spawn``), then fills the derived columns (``bench.measure.derived``) by rewriting
``results.jsonl`` atomically, writes the report (``bench.report.run_report``), points ``<out>/latest`` at
the run and, with ``--gate``, runs the regression gate (``bench.gate``).

Exit codes, highest precedence first: 2, bad input (refused before anything runs: no run folder);
130, interrupted (``--resume`` continues); 1, the regression gate failed; 3, the run finished but
a case crashed, timed out or ran out of memory (the failed cases are listed last; every other
case and the reports are written); 0, everything ran (and the gate, if asked, passed).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.gate import gate
from bench.measure import ref_tree
from bench.measure.ref_tree import Plan, RefError, RefTree, check_contract, tree_state
from bench.measure.results import EXIT_CASES_FAILED
from bench.measure.run_cases import execute
from bench.measure.run_state import drop_unfinished, write_records_atomic
from bench.plan.profile import (  # noqa: F401 - re-exported: the run's public names
    PARTS,
    RunError,
    deep_merge,
    effective_profile,
    load_profile,
    profile_names,
    profile_parts,
)
from bench.plan.sides import is_ref, ref_name


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench run",
        description=__doc__.split("\n\n")[0],
        epilog="exit codes: 0 ok; 1 regression gate failed; 2 bad input (nothing ran); "
        f"{EXIT_CASES_FAILED} a case crashed, timed out or ran out of memory; 130 interrupted",
    )
    p.add_argument("--models", help="comma-separated presets or spec files (default: the profile's)")
    p.add_argument("--impls", help="comma-separated implementations (default: all registered)")
    p.add_argument("--dtype", help="float32 or float64, or a comma list (default: the profile's)")
    p.add_argument("--seeds", help="accuracy seeds for every model, e.g. 0-9 or 0,3,5 (default: the profile's)")
    p.add_argument("--profile", default="quick", help=f"one of {', '.join(profile_names())}, or a .toml path")
    p.add_argument("--out", default="runs", help="folder holding run directories (default: runs, git-ignored)")
    p.add_argument("--resume", nargs="?", const="latest", metavar="RUN_DIR",
                   help="continue an interrupted run (default: <out>/latest), skipping finished cases")  # fmt: skip
    p.add_argument(
        "--threads",
        type=int,
        help="thread count for every backend (default: the profile's, else NNBENCH_THREADS or all cores)",
    )
    p.add_argument("--no-pin", action="store_true", help="do not pin workers to CPUs even if the profile says so")
    p.add_argument("--data-dir", help="MNIST directory (default: MNIST_DIR, then the cache)")
    p.add_argument("--timeout", type=float, help="per-worker timeout in seconds, overriding the profile's")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    p.add_argument("--dry-run", action="store_true",
                   help="prove the profile's paths (imports, data, report) without measuring: every speed case "
                        "once, backends the profile requires may be unavailable (skipped, with why)")  # fmt: skip
    p.add_argument("--gate", metavar="BASELINE", help="after the run, compare it with BASELINE (exit 1 on regression); "
                   "with no baseline of this machine kind there, speed is gated by an A/B against the commit "
                   "BASELINE was taken at")  # fmt: skip
    p.add_argument("--gate-ref", metavar="REF",
                   help="measure every case twice, with the working tree's code and with git revision REF's "
                        "(interleaved, same machine), then gate the working tree against REF "
                        "(exit 1 on regression)")  # fmt: skip
    p.add_argument("--no-gate", action="store_true", help=argparse.SUPPRESS)  # --gate-ref's measurement alone
    return p.parse_args(argv)


def _split(s: str | None) -> list[str]:
    return [x.strip() for x in (s or "").split(",") if x.strip()]


def resolve_inputs(ns: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any], list[str], list[str]]:
    """(profile, specs by model name, impls, dtypes); ``RunError`` on any bad input."""
    from bench.core.spec import SpecError
    from bench.plan import backends
    from bench.plan.inputs import fits_mnist
    from bench.plan.presets import resolve

    profile = load_profile(ns.profile)
    specs: dict[str, Any] = {}
    for m in _split(ns.models) or list(profile.get("models", [])):
        try:
            spec = resolve(m)
        except SpecError as e:
            raise RunError(str(e)) from e
        why = fits_mnist(spec)
        if why:
            raise RunError(f"spec {spec.name!r} cannot run on MNIST: {why}")
        specs[spec.name] = spec.to_dict()
    if not specs:
        raise RunError("no models given (--models) and none in the profile")
    impls = _split(ns.impls) or list(profile.get("impls") or backends.names())
    unknown = [i for i in impls if i not in backends.names()]
    if unknown:
        valid = ", ".join(backends.names())
        raise RunError(f"unknown implementation(s) {', '.join(unknown)}; valid names: {valid}")
    if getattr(ns, "dry_run", False):
        profile["dry_run"] = True  # bench.plan.profile.effective_profile: the least speed budget
    else:
        check_required(profile, impls)
    if getattr(ns, "seeds", None):
        set_seeds(profile, parse_seeds(ns.seeds))
    dtypes = _split(ns.dtype) or list(profile.get("dtypes", ["float32"]))
    bad = [d for d in dtypes if d not in ("float32", "float64")]
    if bad:
        raise RunError(f"unknown dtype(s) {', '.join(bad)}; valid: float32, float64")
    return profile, specs, impls, dtypes


def parse_seeds(text: str) -> list[int]:
    """``"0-9"``, ``"0,3,5"`` or both (``"0-4,10-14"``): the seeds, in order, each once."""
    seeds: list[int] = []
    for part in _split(text):
        lo, _, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            raise RunError(f"--seeds: {part!r} is not a seed or a range like 0-9") from None
        if first < 0 or last < first:
            raise RunError(f"--seeds: {part!r} is not a range of seeds >= 0, low to high")
        seeds += [s for s in range(first, last + 1) if s not in seeds]
    if not seeds:
        raise RunError("--seeds: no seeds given")
    return seeds


def set_seeds(profile: dict[str, Any], seeds: list[int]) -> None:
    """The profile's seeds, for every model and implementation (their overrides' seeds dropped)."""
    profile["seeds"] = seeds
    for table in ("model_overrides", "overrides"):
        for over in profile.get(table, {}).values():
            over.pop("seeds", None)
            for inner in over.get("models", {}).values():
                inner.pop("seeds", None)


def check_required(profile: dict[str, Any], impls: list[str]) -> None:
    """``RunError`` naming each backend the profile requires (``require``; those the run measures)
    that cannot run here, with its reason: a GPU profile on a machine without its GPU backends
    stops before anything runs rather than measure NumPy alone."""
    from bench.plan import backends

    need = [i for i in profile.get("require", []) if i in impls]
    if not need:
        return
    avail = backends.available()
    missing = [f"{i}: {avail[i][1]}" for i in need if i in avail and not avail[i][0]]
    if missing:
        raise RunError(
            f"profile {profile.get('name')!r} requires backends that cannot run here:\n  " + "\n  ".join(missing)
        )


def create_run(ns: argparse.Namespace, ab: Plan | None = None) -> Path:
    from bench.core.threads import apply_threads, configured_threads, pin_cpus
    from bench.measure import envinfo, inject
    from bench.plan import backends

    injected = os.environ.get(inject.ENV) or None
    try:
        inject.parse(injected)  # fail before the run starts on a malformed value
    except inject.InjectionError as e:
        raise RunError(str(e)) from e
    profile, specs, impls, dtypes = resolve_inputs(ns)
    registry = backends.registry()
    if ab is not None:  # side A then side B of each implementation REF has too (bench.plan.sides)
        impls = [n for i in impls for n in ((i, ref_name(i)) if i in ab.registry else (i,))]
        registry |= {ref_name(i): ab.registry[i] for i in impls if not is_ref(i) and i in ab.registry}
    threads = apply_threads(ns.threads or profile.get("threads") or configured_threads())
    try:
        cpus = pin_cpus(threads) if profile.get("pin") and not getattr(ns, "no_pin", False) else None
    except ValueError as e:
        raise RunError(str(e)) from e
    out = Path(ns.out)
    run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{profile['name']}"
    run_dir, n = out / run_id, 1
    while run_dir.exists():
        n += 1
        run_dir = out / f"{run_id}-{n}"
    run_dir.mkdir(parents=True)
    run = {
        "run_id": run_dir.name,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv,
        "profile": profile,
        "specs": specs,
        "models": list(specs),
        "impls": impls,
        "dtypes": dtypes,
        "threads": threads,
        "cpus": cpus,  # every worker pinned to these CPUs (profile ``pin``), or None
        "timeout_s": ns.timeout,
        "data_dir": str(Path(ns.data_dir).resolve()) if ns.data_dir else None,
        "registry": registry,
        "tree": tree_state(),  # the working tree measured: HEAD, dirty, the hash of its changes
        "gate_ref": ab.to_json() if ab else None,  # an A/B run: REF's side (bench.measure.ref_tree)
        "env": envinfo.collect(threads),
        "injected_slowdown": injected,  # a gate-validation run (bench/measure/inject.py), not a measurement
    }
    from bench.measure.results import SCHEMA_VERSION

    run["schema_version"] = SCHEMA_VERSION
    if profile.get("gpu"):  # the device first: a short GPU loan's log says what it ran on
        print(f"GPU: {run['env'].get('gpu', 'unknown')}", flush=True)
    (run_dir / "run.json").write_text(json.dumps(run, indent=2, default=str), encoding="utf-8")
    return run_dir


def find_resume_dir(ns: argparse.Namespace) -> Path:
    if ns.resume == "latest":
        latest = Path(ns.out) / "latest"
        if latest.is_symlink() or latest.is_dir():
            run_dir = latest.resolve()
        elif latest.is_file():
            run_dir = Path(ns.out) / latest.read_text().strip()
        else:
            raise RunError(f"--resume: no {latest} to resume; give the run directory")
    else:
        run_dir = Path(ns.resume)
    if not (run_dir / "run.json").is_file():
        raise RunError(f"--resume: {run_dir} is not a run directory (no run.json)")
    return run_dir


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ns = parse_args(argv)
    try:
        ab = plan_ab(ns)
    except (RunError, RefError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None  # cancelled CI job
    try:
        with RefTree(ab.commit) if ab else contextlib.nullcontext():  # removed on every way out
            return measure_and_gate(ns, ab)
    except RefError as e:  # REF could not be checked out or held
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def plan_ab(ns: argparse.Namespace) -> Plan | None:
    """What a run compares: REF's side of an A/B run (``--gate-ref``, the fallback of ``--gate``
    with no stored baseline of this machine kind, or a resumed A/B run), else None. Bad input is
    ``RunError``/``RefError``, before anything runs."""
    if ns.gate and ns.gate_ref:
        raise RunError("give --gate BASELINE or --gate-ref REF, not both")
    if ns.gate:
        from bench.judge.baseline import BaselineError, select

        try:
            select(ns.gate, None)  # a baseline run, or a folder of them (picked by machine kind after the run)
        except (BaselineError, OSError) as e:
            raise RunError(f"--gate: {e}") from e
    if ns.resume:
        saved = json.loads((find_resume_dir(ns) / "run.json").read_text(encoding="utf-8")).get("gate_ref")
        return Plan.from_json(saved) if saved else None
    if not (ns.gate_ref or ns.gate):
        return None
    _, _, impls, _ = resolve_inputs(ns)
    asked = bool(_split(ns.impls))
    if ns.gate_ref:
        return ref_tree.plan(ns.gate_ref, impls, asked)
    from bench.judge.baseline import fallback

    p, ns.speed_not_gated = fallback(ns.gate, impls, asked)
    return p


def measure_and_gate(ns: argparse.Namespace, ab: Plan | None) -> int:
    try:
        if ab is not None and not ns.resume:
            check_contract(ab, [i for i in resolve_inputs(ns)[2] if i in ab.registry])
        if ns.resume:
            run_dir = find_resume_dir(ns)
            dropped = drop_unfinished(run_dir)
            print(f"resuming {run_dir} ({dropped} records of unfinished parts dropped)", flush=True)
        else:
            run_dir = create_run(ns, ab)
    except (RunError, RefError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if ab is not None:
        why = f"; {ab.why}" if ab.why else ""
        print(f"A/B: the working tree against {ab.rev} ({ab.short}){why}", flush=True)
    try:
        execute(run_dir, ns.timeout)
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: python -m bench run --resume {run_dir}", file=sys.stderr)
        return 130
    finish(run_dir, ns)
    rc = gate(ns, run_dir, rerun=main) if (ns.gate or ns.gate_ref) and not ns.no_gate else 0
    return with_failed_cases(run_dir, rc)


def with_failed_cases(run_dir: Path, rc: int) -> int:
    """List the cases that failed (last, so a log's tail shows them); ``rc``, or
    ``EXIT_CASES_FAILED`` where the run otherwise passed and any case failed."""
    from bench.measure.results import failed_cases, read_records
    from bench.measure.terminal import WIDTH, cut

    failed = failed_cases(read_records(run_dir))
    if failed:
        print(f"\nFAILED CASES ({len(failed)}): the run finished without them; logs: {run_dir / 'logs'}")
        for r in failed:
            first = (r.get("error") or "").strip().splitlines()
            where = f"{r['impl']} {r.get('model') or '-'} {r.get('dtype') or '-'} {r['phase']}"
            print(cut(f"  {where}: {r['status'].upper()}: {first[-1] if first else ''}", WIDTH))
    return EXIT_CASES_FAILED if failed and rc == 0 else rc


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def finish(run_dir: Path, ns: argparse.Namespace) -> None:
    from bench.measure.derived import fill_derived
    from bench.measure.results import read_records
    from bench.measure.terminal import print_summary

    records = fill_derived(read_records(run_dir))
    write_records_atomic(run_dir, records)
    run_path = run_dir / "run.json"
    run = json.loads(run_path.read_text(encoding="utf-8"))
    run["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    run_path.write_text(json.dumps(run, indent=2, default=str), encoding="utf-8")
    print_summary(records)
    if not ns.no_report:
        try:
            from bench.report.run_report import write_report
        except ImportError:
            write_report = None
        if write_report is not None:
            try:
                write_report(run_dir)
            except Exception as e:  # the measurements are safe on disk; say why the report failed
                print(f"warning: report failed: {type(e).__name__}: {e}", file=sys.stderr)
    try:  # per-case compile caches are removed as each case ends; drop their empty parent
        (run_dir / "cache").rmdir()
    except OSError:
        pass
    update_latest(run_dir)
    print(f"results: {run_dir}", flush=True)


def update_latest(run_dir: Path) -> None:
    latest = run_dir.parent / "latest"
    try:
        if latest.is_symlink() or latest.is_file():
            latest.unlink()
        latest.symlink_to(run_dir.name, target_is_directory=True)
    except OSError:
        latest.write_text(run_dir.name + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
