"""One implementation's work, in its own process: ``python -m bench.measure.worker <command> ...``.

Commands (the run, ``bench.measure.run_cases``, starts them through ``bench.measure.spawn``; each reads
``run.json`` of the run dir):

- ``availability --run-dir D --impls a,b``: prints ``{name: [ok, reason, requires]}``;
- ``peak --run-dir D``: times a large float32 NumPy GEMM, appends a ``peak`` record;
- ``case --run-dir D --impl I --model M --dtype T --parts agreement,speed,accuracy``: runs the
  parts in that order, appending each part's records to ``results.jsonl`` and marking it done
  in ``cases.jsonl`` as it finishes. A part that raises is recorded as an ``error`` record
  (``MemoryError`` -> oom, ``NotImplementedError`` -> not_implemented, else crash) and the next
  part still runs.

The thread count is applied (``bench.core.threads.apply_threads``) before NumPy or any framework is
imported. Progress goes to stdout as lines ``@@nnbench {json}``; everything else a library
prints is left to the log. Speed: the first call of each phase on a freshly built model in this
fresh process is the cold (compile/JIT) time; agreement then runs (and warms up further) before
the timed rounds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.core.threads import apply_threads, configured_threads, pin_from_env
from bench.measure.case import Case, backend, emit, load_run
from bench.measure.run_state import mark_done
from bench.plan.profile import PARTS


def cmd_availability(args: argparse.Namespace) -> int:
    run = load_run(Path(args.run_dir))
    out = {}
    for name in args.impls.split(","):
        try:
            mod = backend(run, name)
            ok, reason = mod.available()
            requires = list(getattr(mod, "REQUIRES", ()))
        except Exception as e:
            ok, reason, requires = False, f"availability check failed: {type(e).__name__}: {e}", []
        out[name] = [bool(ok), str(reason), requires]
    emit(availability=out)
    return 0


def cmd_contract(args: argparse.Namespace) -> int:
    """``{name: problem or ""}`` for each backend module of ``--modules`` (JSON ``{name: module}``):
    whether it imports here and has the contract's functions (``bench.measure.ref_tree.check_contract``)."""
    import importlib

    from bench.measure.ref_tree import CONTRACT

    out = {}
    for name, module in json.loads(args.modules).items():
        try:
            mod = importlib.import_module(module)
        except Exception as e:
            out[name] = f"cannot be imported here: {type(e).__name__}: {e}"
            continue
        missing = [f for f in CONTRACT if not callable(getattr(mod, f, None))]
        out[name] = f"no function {', '.join(missing)}" if missing else ""
    emit(contract=out)
    return 0


def cmd_peak(args: argparse.Namespace) -> int:
    """The machine's GEMM peak in each of the run's dtypes (float64 cases are compared with a
    float64 GEMM). Robust to a busy moment: GFLOP/s from the best round of ``rounds`` (a peak is
    what the machine can do; a median taken while a neighbour ran would make ``frac_peak``
    exceed 1). ``--when before|after``: the run measures it on both sides of its cases and
    flags the run when the two moved apart."""
    from bench.measure.results import append_records

    run_dir = Path(args.run_dir)
    run = load_run(run_dir)
    pk = run["profile"].get("peak", {})
    n, rounds = int(pk.get("gemm_n", 2048)), int(pk.get("rounds", 10))
    recs = [peak_record(run_dir, run, dtype, n, rounds, args.when) for dtype in run.get("dtypes", ["float32"])]
    recs += bandwidth_records(run, args.when)
    append_records(run_dir, recs)
    mark_done(run_dir, "numpy", None, None, f"peak-{args.when}", "ok")
    return 0


def peak_record(run_dir: Path, run: dict[str, Any], dtype: str, n: int, rounds: int, when: str) -> dict[str, Any]:
    import numpy as np

    from bench.measure.results import make_record
    from bench.measure.timing import Timer, TimingConfig

    emit(phase=f"peak ({when}): {dtype} GEMM {n}x{n}")
    rng = np.random.default_rng(0)
    a, b = rng.random((n, n)).astype(dtype), rng.random((n, n)).astype(dtype)  # (n, n) each
    timer = Timer(TimingConfig(warmup_rounds=2, min_rounds=rounds, max_rounds=rounds, round_min_s=0.0, target_s=0.0))
    m = timer.measure(f"peak-gemm-{dtype}-{n}-{when}", lambda: a @ b)
    (run_dir / "benchmarks").mkdir(exist_ok=True)
    timer.save_json(str(run_dir / "benchmarks" / f"peak-{dtype}-{when}.json"))
    return make_record(
        "peak", run_id=run["run_id"], impl="numpy", model=None, dtype=dtype, gemm_n=n, when=when,
        gflops=2 * n**3 / m.min_s / 1e9, gflops_median=2 * n**3 / m.median_s / 1e9,
        median_s=m.median_s, samples_s=m.samples_s,
    )  # fmt: skip


def bandwidth_records(run: dict[str, Any], when: str) -> list[dict[str, Any]]:
    """The memory roofs (``bench.measure.probe.stream``) at the run's thread count, and at one
    thread when the run uses more (``[bandwidth] rounds`` in the profile)."""
    from bench.measure.probe import stream
    from bench.measure.results import make_record

    rounds = int(run["profile"].get("bandwidth", {}).get("rounds", 7))
    threads = configured_threads()
    caches = stream.cache_sizes()
    out = []
    for t in sorted({threads, 1}, reverse=True):
        emit(phase=f"bandwidth ({when}): copy and triad at {t} thread(s)")
        for r in stream.measure_all(t, rounds, caches):
            out.append(make_record("bandwidth", run_id=run["run_id"], impl="numpy", model=None, dtype="float64",
                                   when=when, **r))  # fmt: skip
    return out


def cmd_case(args: argparse.Namespace) -> int:
    validated = {"true": True, "false": False, "none": None}[args.validated]
    case = Case(Path(args.run_dir), args.impl, args.model, args.dtype, validated, args.process)
    parts = [p for p in args.parts.split(",") if p]
    if "settings" in parts:
        case.run_part("settings")
    if "speed" in parts:  # the cold probe comes first, so the compile/JIT time is really cold
        try:
            case.cold_probe(int(case.profile["speed"]["batch_sizes"][0]))
        except BaseException as e:  # noqa: B036 - recorded by part_speed when it fails again
            if isinstance(e, KeyboardInterrupt | SystemExit):
                raise
            case.model, case.cold = None, {}
    for part in PARTS:
        if part in parts:
            case.run_part(part)
    return 0


def cmd_warmprobe(args: argparse.Namespace) -> int:
    """Build and first calls again, in a fresh process whose compile cache the case filled."""
    case = Case(Path(args.run_dir), args.impl, args.model, args.dtype, None)
    case.cold_probe(int(case.profile["speed"]["batch_sizes"][0]))
    emit(warm=case.cold)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.measure.worker")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("availability")
    a.add_argument("--run-dir", required=True)
    a.add_argument("--impls", required=True)
    t = sub.add_parser("contract")
    t.add_argument("--modules", required=True, help="JSON {name: module}")
    k = sub.add_parser("peak")
    k.add_argument("--run-dir", required=True)
    k.add_argument("--when", choices=("before", "after"), default="before")
    c = sub.add_parser("case")
    c.add_argument("--run-dir", required=True)
    c.add_argument("--impl", required=True)
    c.add_argument("--model", required=True)
    c.add_argument("--dtype", required=True)
    c.add_argument("--parts", default="agreement,speed,accuracy")
    c.add_argument("--validated", choices=("true", "false", "none"), default="none")
    c.add_argument("--process", type=int, default=0, help="speed process index (>0: speed only, re-measured)")
    w = sub.add_parser("warmprobe")
    for name in ("--run-dir", "--impl", "--model", "--dtype"):
        w.add_argument(name, required=True)
    args = p.parse_args(argv)
    apply_threads(configured_threads())  # before NumPy or a framework is imported
    pin_from_env()
    cmds = {"availability": cmd_availability, "contract": cmd_contract, "peak": cmd_peak, "case": cmd_case}
    cmds["warmprobe"] = cmd_warmprobe
    return cmds[args.cmd](args)


if __name__ == "__main__":
    sys.exit(main())
