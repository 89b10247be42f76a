"""``python -m bench run``: the benchmark run (what ``tox -e bench`` calls).

Profiles are data (``bench/profiles/<name>.toml``, or a path to such a file): models, dtypes,
seeds, batch sizes, rounds, accuracy budgets and timeouts, with per-implementation overrides
(``[overrides.<impl>]``, narrowed by ``[overrides.<impl>.models.<model>]``).

A run lives in ``<out>/<run_id>/`` (``runs/`` by default, git-ignored; committed reports live
in ``reports/``): ``run.json`` (config, profile, specs, environment),
``results.jsonl`` (``bench.results`` records), ``cases.jsonl`` (which case parts are done),
``benchmarks/*.json`` (pytest-benchmark JSON) and ``logs/`` (each worker's stderr).

Order: availability of every implementation (one worker process), the machine's peak (a
GEMM per dtype, one worker), then for each available implementation, model and dtype one worker
process (``bench.worker case``) running settings, agreement, speed and accuracy. A worker that
crashes, hangs past its timeout or is killed (OOM) is recorded as ``error`` records for the
parts it did not finish, and the run goes on. A case is ``(impl, model, dtype, part)``;
``--resume`` skips the parts marked done and drops the partial records of the others.
At the end the derived columns (speedup against NumPy and pure Python, fraction of peak) are
filled in by rewriting ``results.jsonl`` atomically, the report is written when
``bench.report.write_report`` exists, and ``<out>/latest`` points at the run.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.profile import (  # noqa: F401 - re-exported: the run's public names
    PARTS,
    RunError,
    deep_merge,
    effective_profile,
    load_profile,
    profile_names,
    profile_parts,
)
from bench.terminal import WIDTH, Progress, cut
from bench.worker import MARK, mark_done, speed_part

REPO = Path(__file__).resolve().parent.parent
KIND_PART = {
    "agreement": "agreement",
    "speed": "speed",
    "compile": "speed",
    "accuracy": "accuracy",
    "setting": "settings",
}
AVAILABILITY_TIMEOUT_S = 300.0
HEARTBEAT_S = 30.0


# ---------------------------------------------------------------------- cases
def done_parts(run_dir: Path) -> set[tuple[Any, ...]]:
    path = run_dir / "cases.jsonl"
    out: set[tuple[Any, ...]] = set()
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                continue  # torn last line
            out.add((d["impl"], d["model"], d["dtype"], d["part"]))
    return out


def record_part(rec: dict[str, Any]) -> tuple[Any, ...] | None:
    """The case ``(impl, model, dtype, part)`` a record belongs to (None: run-level)."""
    kind = rec.get("kind")
    if kind == "error":
        part = rec.get("phase")
        if part in ("availability", "peak"):
            return None
    elif kind in ("availability", "peak"):
        return None
    else:
        part = KIND_PART.get(kind)
        if kind == "speed" and rec.get("process"):
            part = speed_part(int(rec["process"]))
    if part == "settings":
        return (rec.get("impl"), None, rec.get("dtype"), "settings")
    return (rec.get("impl"), rec.get("model"), rec.get("dtype"), part)


def write_records_atomic(run_dir: Path, records: list[dict[str, Any]]) -> None:
    from bench.results import RESULTS_FILE

    path = run_dir / RESULTS_FILE
    tmp = path.with_suffix(".jsonl.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def drop_unfinished(run_dir: Path) -> int:
    """Remove the records of case parts not marked done (an interrupted part re-runs whole)."""
    from bench.results import RESULTS_FILE, read_records

    if not (run_dir / RESULTS_FILE).is_file():
        return 0
    done = done_parts(run_dir)
    keep, dropped = [], 0
    for r in read_records(run_dir):
        key = record_part(r)
        if key is None or key in done:
            keep.append(r)
        else:
            dropped += 1
    write_records_atomic(run_dir, keep)
    return dropped


def validated_flag(records: list[dict[str, Any]], impl: str, model: str, dtype: str) -> bool | None:
    mine = [r for r in records if (r.get("impl"), r.get("model"), r.get("dtype")) == (impl, model, dtype)]
    if any(r["kind"] == "error" and r.get("phase") == "agreement" for r in mine):
        return False
    rows = [r for r in mine if r["kind"] == "agreement"]
    return all(r.get("ok") for r in rows) if rows else None


# ---------------------------------------------------------------------- derived columns
def fill_derived(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Speedups as per-sample throughput ratios (samples/s over the reference's, same model,
    dtype, phase and run) and the fraction of the run's measured peak in the case's dtype
    (GFLOP/s over the best peak GEMM's GFLOP/s; float64 cases against the float64 GEMM).
    Against numpy the batch size is the same. Pure Python is timed at small batches only (its
    per-sample cost does not depend on the batch), so when it lacks the batch size its best
    throughput for that phase is the reference. With several speed processes per case, the
    speedups use the case's median of process medians; ``frac_peak`` stays per record."""
    medians: dict[tuple[Any, ...], list[float]] = {}
    for r in records:
        if r.get("kind") == "speed" and r.get("median_s"):
            medians.setdefault((r["impl"], r["model"], r["dtype"], r["phase"], r["batch_size"]), []).append(
                r["median_s"]
            )
    # a case's rate: its batch over the median of its process medians (what the gate judges)
    rate = {k: k[4] / statistics.median(v) for k, v in medians.items()}
    best: dict[tuple[Any, ...], float] = {}
    for k, sps in rate.items():
        best[k[:4]] = max(best.get(k[:4], 0.0), sps)
    peak = peak_by_dtype(records)
    for r in records:
        if r.get("kind") != "speed" or not r.get("median_s"):
            continue
        key = (r["model"], r["dtype"], r["phase"])
        sps = rate[(r["impl"], *key, r["batch_size"])]
        numpy_rate = rate.get(("numpy", *key, r["batch_size"]))
        r["speedup_vs_numpy"] = sps / numpy_rate if numpy_rate else None
        pp_rate = rate.get(("pure_python", *key, r["batch_size"])) or best.get(("pure_python", *key))
        r["speedup_vs_pure_python"] = sps / pp_rate if pp_rate else None
        p = peak.get(r["dtype"])
        r["frac_peak"] = r["gflops"] / p if p and r.get("gflops") is not None else None
    return records


def peak_by_dtype(records: list[dict[str, Any]]) -> dict[str, float]:
    """The run's GEMM peak per dtype: the best of its peak measurements (before and after)."""
    out: dict[str, float] = {}
    for r in records:
        if r.get("kind") == "peak" and r.get("gflops"):
            d = r.get("dtype") or "float32"
            out[d] = max(out.get(d, 0.0), float(r["gflops"]))
    return out


# ---------------------------------------------------------------------- workers
@dataclass
class WorkerResult:
    returncode: int | None
    timed_out: bool
    last_phase: str
    stderr_tail: str
    events: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0


def run_worker(
    args: list[str],
    run_dir: Path,
    log_name: str,
    timeout_s: float,
    label: str,
    progress: Progress | None,
    extra_env: dict[str, str] | None = None,
) -> WorkerResult:
    """``python -m bench.worker *args`` in its own process group; kill the group on timeout."""
    logs = run_dir / "logs"
    logs.mkdir(exist_ok=True)
    log_path = logs / f"{log_name}.log"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra_env or {})
    t0 = time.monotonic()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.worker", *args],
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            cwd=str(REPO),
            start_new_session=True,
        )
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
        events: list[dict[str, Any]] = []
        other: list[str] = []
        try:
            phase, timed_out = _watch(proc, lines, events, other, label, progress, t0, timeout_s)
        except BaseException:  # Ctrl-C / SIGTERM of the run: take the worker down with us
            _kill_group(proc)
            proc.wait(timeout=10)
            raise
        proc.wait()
        if other:
            log.write(("\n[stdout]\n" + "\n".join(other) + "\n").encode())
    tail = _tail(log_path)
    return WorkerResult(proc.returncode, timed_out, phase, tail, events, time.monotonic() - t0)


def _watch(
    proc: subprocess.Popen[bytes],
    lines: queue.Queue[str | None],
    events: list[dict[str, Any]],
    other: list[str],
    label: str,
    progress: Progress | None,
    t0: float,
    timeout_s: float,
) -> tuple[str, bool]:
    """Follow the worker's progress lines until it exits or runs out of time: (last phase, timed out)."""
    phase, eof, shown = "start", False, 0.0
    if progress:
        progress.show(label, phase, 0.0)
    while not (eof and proc.poll() is not None):
        elapsed = time.monotonic() - t0
        if elapsed > timeout_s:
            _kill_group(proc)
            return phase, True
        try:
            line = lines.get(timeout=min(1.0, max(0.05, timeout_s - elapsed)))
        except queue.Empty:
            line = ""
        if line is None:
            eof = True
        elif line.startswith(MARK):
            try:
                ev = json.loads(line[len(MARK) :])
            except json.JSONDecodeError:
                ev = {}
            events.append(ev)
            if "phase" in ev:
                phase, shown = ev["phase"], -HEARTBEAT_S  # show a new phase at once
        elif line:
            other.append(line)
        now = time.monotonic() - t0
        if progress and now - shown >= HEARTBEAT_S:
            progress.show(label, phase, now)
            shown = now
    return phase, False


def _pump(stream: Any, q: queue.Queue[str | None]) -> None:
    for raw in iter(stream.readline, b""):
        q.put(raw.decode("utf-8", "replace").rstrip("\n"))
    q.put(None)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _tail(path: Path, n: int = 3000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-n:].decode("utf-8", "replace")


def failure(res: WorkerResult, timeout_s: float) -> tuple[str, str]:
    """(status, error text) for a worker that did not finish its parts."""
    where = f"during {res.last_phase!r}"
    if res.timed_out:
        return "timeout", f"no result after {timeout_s:.0f} s (timeout) {where}\n{res.stderr_tail}"
    rc = res.returncode
    if rc is not None and rc < 0:
        sig = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
        if rc == -signal.SIGKILL:
            return "oom", f"killed by {sig} {where} (most likely the kernel's out-of-memory killer)\n{res.stderr_tail}"
        return "crash", f"killed by signal {sig} {where}\n{res.stderr_tail}"
    if "MemoryError" in res.stderr_tail:
        return "oom", f"MemoryError {where}, exit code {rc}\n{res.stderr_tail}"
    return "crash", f"exit code {rc} {where}\n{res.stderr_tail}"


# ---------------------------------------------------------------------- the run
def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench run", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", help="comma-separated presets or spec files (default: the profile's)")
    p.add_argument("--impls", help="comma-separated implementations (default: all registered)")
    p.add_argument("--dtype", help="float32 or float64, or a comma list (default: the profile's)")
    p.add_argument("--profile", default="quick", help=f"one of {', '.join(profile_names())}, or a .toml path")
    p.add_argument("--out", default="runs", help="folder holding run directories (default: runs, git-ignored)")
    p.add_argument("--resume", nargs="?", const="latest", metavar="RUN_DIR",
                   help="continue an interrupted run (default: <out>/latest), skipping finished cases")  # fmt: skip
    p.add_argument("--threads", type=int, help="thread count for every backend (default: NNBENCH_THREADS or all cores)")
    p.add_argument("--data-dir", help="MNIST directory (default: MNIST_DIR, then the cache)")
    p.add_argument("--timeout", type=float, help="per-worker timeout in seconds, overriding the profile's")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    p.add_argument("--gate", metavar="BASELINE", help="after the run, compare it with BASELINE (exit 1 on regression)")
    return p.parse_args(argv)


def _split(s: str | None) -> list[str]:
    return [x.strip() for x in (s or "").split(",") if x.strip()]


def resolve_inputs(ns: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any], list[str], list[str]]:
    """(profile, specs by model name, impls, dtypes); ``RunError`` on any bad input."""
    import implementations
    from bench.spec import SpecError, resolve

    profile = load_profile(ns.profile)
    specs: dict[str, Any] = {}
    for m in _split(ns.models) or list(profile.get("models", [])):
        try:
            spec = resolve(m)
        except SpecError as e:
            raise RunError(str(e)) from e
        specs[spec.name] = spec.to_dict()
    if not specs:
        raise RunError("no models given (--models) and none in the profile")
    impls = _split(ns.impls) or implementations.names()
    unknown = [i for i in impls if i not in implementations.names()]
    if unknown:
        valid = ", ".join(implementations.names())
        raise RunError(f"unknown implementation(s) {', '.join(unknown)}; valid names: {valid}")
    dtypes = _split(ns.dtype) or list(profile.get("dtypes", ["float32"]))
    bad = [d for d in dtypes if d not in ("float32", "float64")]
    if bad:
        raise RunError(f"unknown dtype(s) {', '.join(bad)}; valid: float32, float64")
    return profile, specs, impls, dtypes


def create_run(ns: argparse.Namespace) -> Path:
    import implementations
    from bench import envinfo, inject
    from bench.threads import apply_threads, configured_threads

    injected = os.environ.get(inject.ENV) or None
    try:
        inject.parse(injected)  # fail before the run starts on a malformed value
    except inject.InjectionError as e:
        raise RunError(str(e)) from e
    profile, specs, impls, dtypes = resolve_inputs(ns)
    threads = apply_threads(ns.threads or configured_threads())
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
        "timeout_s": ns.timeout,
        "data_dir": ns.data_dir,
        "registry": dict(implementations._REGISTRY),
        "env": envinfo.collect(threads),
        "injected_slowdown": injected,  # a gate-validation run (bench/inject.py), not a measurement
    }
    from bench.results import SCHEMA_VERSION

    run["schema_version"] = SCHEMA_VERSION
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
    if ns.gate and not (Path(ns.gate) / "results.jsonl").is_file():
        print(f"error: --gate: no baseline run at {ns.gate} (no results.jsonl)", file=sys.stderr)
        return 2
    try:
        if ns.resume:
            run_dir = find_resume_dir(ns)
            dropped = drop_unfinished(run_dir)
            print(f"resuming {run_dir} ({dropped} records of unfinished parts dropped)", flush=True)
        else:
            run_dir = create_run(ns)
    except RunError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None  # cancelled CI job
    try:
        execute(run_dir, ns)
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: python -m bench run --resume {run_dir}", file=sys.stderr)
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
    finish(run_dir, ns)
    if ns.gate:
        return gate(ns, run_dir)
    return 0


def gate(ns: argparse.Namespace, run_dir: Path) -> int:
    """Compare with the baseline; a speed-only failure must reproduce in fresh worker
    processes (``bench.compare`` docstring, rule 5) before it fails the gate."""
    from bench.compare import main as compare_main
    from bench.compare import speed_only_failures

    print(f"\nregression gate: {ns.gate} -> {run_dir}", flush=True)
    first = "first measurement (speed failures are re-measured before the verdict)"
    rc = compare_main([ns.gate, str(run_dir), "--label", first])
    suspects = speed_only_failures(ns.gate, str(run_dir)) if rc == 1 else None
    if not suspects:
        return final_verdict(ns, run_dir, rc, None)
    impls = sorted(set(suspects) | {"numpy"})
    models = sorted(set().union(*suspects.values()))
    print(
        f"\nspeed-only failure: re-measuring {', '.join(impls)} on {', '.join(models)} in fresh processes",
        flush=True,
    )
    confirm = [
        "--profile", str(ns.profile), "--out", str(run_dir.parent / f"{run_dir.name}-confirm"),
        "--impls", ",".join(impls), "--models", ",".join(models), "--no-report",
    ]  # fmt: skip
    for opt in ("threads", "data_dir", "timeout"):
        if getattr(ns, opt):
            confirm += [f"--{opt.replace('_', '-')}", str(getattr(ns, opt))]
    if main(confirm) != 0:
        return final_verdict(ns, run_dir, 1, None)
    confirm_dir = run_dir.parent / f"{run_dir.name}-confirm" / "latest"
    rc = compare_main([ns.gate, str(confirm_dir), "--impls", ",".join(impls), "--models", ",".join(models),
                       "--label", "confirmation"])  # fmt: skip
    print(f"confirmation run: {'regression reproduced' if rc else 'not reproduced (a slow process, not the code)'}; "
          "the first measurement's failing speed rows above were re-measured", flush=True)  # fmt: skip
    return final_verdict(ns, run_dir, rc, confirm_dir.resolve())


def final_verdict(ns: argparse.Namespace, run_dir: Path, rc: int, confirm_dir: Path | None) -> int:
    """The one final line of the gate, also written to the run's ``gate.json`` and summary."""
    from bench.report import GATE_FILE

    verdict = {0: "PASS", 1: "FAIL"}.get(rc, f"ERROR (exit {rc})")
    info = {"verdict": verdict, "baseline": str(ns.gate), "confirmation": confirm_dir is not None,
            "confirm_dir": str(confirm_dir) if confirm_dir else None}  # fmt: skip
    (run_dir / GATE_FILE).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    if not ns.no_report:
        try:
            from bench.report import write_report

            write_report(run_dir)
        except Exception as e:  # the verdict stands without its report
            print(f"warning: report failed: {type(e).__name__}: {e}", file=sys.stderr)
    how = "after re-measuring the speed failures" if confirm_dir else "no confirmation needed"
    print(f"\nRESULT: {verdict} (regression gate against {ns.gate}; {how})", flush=True)
    return rc


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def execute(run_dir: Path, ns: argparse.Namespace) -> None:
    import implementations
    from bench.results import append_records, make_record, read_records
    from bench.threads import apply_threads

    run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    apply_threads(run["threads"])
    implementations._REGISTRY.update(run.get("registry", {}))
    profile, rid = run["profile"], run["run_id"]
    timeout_override = ns.timeout or run.get("timeout_s")
    done = done_parts(run_dir)
    print(f"run {rid} -> {run_dir}  (profile {profile['name']}, threads {run['threads']})", flush=True)

    # availability of every requested implementation, in one worker
    avail: dict[str, list[Any]] = {}
    if ("*", None, None, "availability") in done:
        for r in read_records(run_dir):
            if r["kind"] == "availability":
                avail[r["impl"]] = [r["available"], r["reason"], r.get("requires")]
    else:
        res = run_worker(["availability", "--run-dir", str(run_dir), "--impls", ",".join(run["impls"])],
                         run_dir, "availability", AVAILABILITY_TIMEOUT_S, "availability", None)  # fmt: skip
        got = next((e["availability"] for e in res.events if "availability" in e), {})
        recs = []
        for impl in run["impls"]:
            ok, reason, requires = got.get(impl, [False, "availability worker failed: " + failure(res, 0)[1], []])
            avail[impl] = [ok, reason, requires]
            recs.append(make_record("availability", run_id=rid, impl=impl, model=None, dtype=None, available=ok,
                                    reason=reason, requires=",".join(requires)))  # fmt: skip
            if not ok:
                recs.append(make_record("error", run_id=rid, impl=impl, model=None, dtype=None, phase="availability",
                                        status="skipped", error=reason))  # fmt: skip
        append_records(run_dir, recs)
        _mark(run_dir, "*", None, None, "availability", "ok")
    for impl, (ok, reason, _) in avail.items():
        print(cut(f"  {impl:<14} {'available' if ok else 'skipped'}: {reason}".splitlines()[0], WIDTH), flush=True)

    cases = [
        (impl, model, dtype)
        for impl in run["impls"]
        if avail.get(impl, [False])[0]
        for model in run["models"]
        for dtype in run["dtypes"]
    ]
    todo = [c for c in cases if any((*c, p) not in done for p in profile_parts(effective_profile(profile, c[0], c[1])))]
    need_peak = [w for w in ("before", "after") if ("numpy", None, None, f"peak-{w}") not in done]
    progress = Progress(len(todo) + len(need_peak) + planned_speed_processes(run, cases, done))
    try:
        run_cases(run_dir, run, todo, need_peak, progress, timeout_override)
    finally:
        progress.close()


def planned_speed_processes(run: dict[str, Any], cases: list[tuple[str, str, str]], done: set) -> int:
    """How many extra speed processes (``speed-p1`` ...) the cases will need, for the progress count."""
    n = 0
    for impl, model, dtype in cases:
        prof = effective_profile(run["profile"], impl, model)
        n += sum((impl, model, dtype, speed_part(k)) not in done for k in range(1, speed_processes(prof)))
    return n


def run_cases(
    run_dir: Path,
    run: dict[str, Any],
    todo: list[tuple[str, str, str]],
    need_peak: list[str],
    progress: Progress,
    timeout_override: float | None,
) -> None:
    """The peak before (when not done yet), every case in ``todo`` (one worker process each),
    the further speed processes of every case (process-major), then the peak after."""
    rid = run["run_id"]
    if "before" in need_peak:
        measure_peak(run_dir, rid, "before", progress)
    for impl, model, dtype in todo:
        run_case(run_dir, run, impl, model, dtype, progress, timeout_override)
    extra = pending_speed_processes(run_dir, run)
    for n, (k, impl, model, dtype) in enumerate(extra):
        last = not any(c[1:] == (impl, model, dtype) for c in extra[n + 1 :])
        run_speed_process(run_dir, run, k, impl, model, dtype, progress, last)
    if "after" in need_peak:
        measure_peak(run_dir, rid, "after", progress)


def measure_peak(run_dir: Path, rid: str, when: str, progress: Progress) -> None:
    """The GEMM peak in its own worker, before or after the cases (``bench.stability.peak_drift`` compares them)."""
    from bench.results import append_records, make_record

    res = run_worker(["peak", "--run-dir", str(run_dir), "--when", when], run_dir, "peak", 600.0, "peak", progress)
    if res.returncode != 0 or res.timed_out:
        status, text = failure(res, 600.0)
        append_records(run_dir, [make_record("error", run_id=rid, impl="numpy", model=None, dtype=None,
                                             phase="peak", status=status, error=text)])  # fmt: skip
        _mark(run_dir, "numpy", None, None, f"peak-{when}", status)
    progress.finish(res.elapsed_s, typical=False)  # a short GEMM: not a case's length


def _mark(run_dir: Path, impl: str, model: str | None, dtype: str | None, part: str, status: str) -> None:
    mark_done(run_dir, impl, model, dtype, part, status)


def run_case(
    run_dir: Path, run: dict[str, Any], impl: str, model: str, dtype: str, progress: Progress, timeout: float | None
) -> None:
    from bench.results import append_records, make_record, read_records

    done = done_parts(run_dir)
    prof = effective_profile(run["profile"], impl, model)
    parts = [p for p in profile_parts(prof) if (impl, model, dtype, p) not in done]
    if (impl, None, dtype, "settings") not in done:
        parts.insert(0, "settings")
    validated = validated_flag(read_records(run_dir), impl, model, dtype) if "agreement" not in parts else None
    timeout_s = float(timeout or prof.get("timeout_s", 600))
    label = f"{impl} {model} {dtype}"
    flag = {True: "true", False: "false", None: "none"}[validated]
    args = ["case", "--run-dir", str(run_dir), "--impl", impl, "--model", model, "--dtype", dtype,
            "--parts", ",".join(parts), "--validated", flag]  # fmt: skip
    # a backend with an on-disk compile cache gets an empty one, so cold_s is really cold
    cache_env = prof.get("cache_env")
    extra_env = {cache_env: str(run_dir / "cache" / f"{impl}-{model}-{dtype}")} if cache_env else {}
    res = run_worker(args, run_dir, f"{impl}-{model}-{dtype}", timeout_s, label, progress, extra_env)
    done = done_parts(run_dir)
    missing = [p for p in parts if ((impl, None, dtype, p) if p == "settings" else (impl, model, dtype, p)) not in done]
    if missing:
        status, text = failure(res, timeout_s)
        drop_unfinished(run_dir)  # partial records of the part that died
        recs = [make_record("error", run_id=run["run_id"], impl=impl, model=None if p == "settings" else model,
                            dtype=dtype, phase=p, status=status, error=text) for p in missing]  # fmt: skip
        append_records(run_dir, recs)
        for p in missing:
            _mark(run_dir, impl, None if p == "settings" else model, dtype, p, status)
        progress.note(f"  {label}: {status.upper()} during {res.last_phase!r}; recorded, carrying on")
    elif cache_env and "speed" in parts:
        warm_cache_probe(run_dir, impl, model, dtype, timeout_s, label, progress, extra_env)
    if extra_env and speed_processes(prof) <= 1:  # the cache served its purpose (cold vs warm)
        shutil.rmtree(extra_env[cache_env], ignore_errors=True)
    progress.finish(res.elapsed_s)


def speed_processes(prof: dict[str, Any]) -> int:
    """P: how many worker processes measure each speed case (profile ``speed.processes``)."""
    return max(1, int(prof.get("speed", {}).get("processes", 1))) if "speed" in profile_parts(prof) else 1


def pending_speed_processes(run_dir: Path, run: dict[str, Any]) -> list[tuple[int, str, str, str]]:
    """``(process, impl, model, dtype)`` still to measure, process-major: every case's second
    process before any case's third, so a slow minute of the machine hits all alike."""
    done = done_parts(run_dir)
    out = []
    cases = sorted({(i, m, d) for (i, m, d, p) in done if p == "speed" and m is not None})
    order = {impl: n for n, impl in enumerate(run["impls"])}
    cases.sort(key=lambda c: (run["models"].index(c[1]) if c[1] in run["models"] else 99, order.get(c[0], 99)))
    for k in range(1, max((speed_processes(effective_profile(run["profile"], i, m)) for i, m, _ in cases), default=1)):
        for impl, model, dtype in cases:
            if k < speed_processes(effective_profile(run["profile"], impl, model)):
                if (impl, model, dtype, speed_part(k)) not in done:
                    out.append((k, impl, model, dtype))
    return out


def run_speed_process(
    run_dir: Path, run: dict[str, Any], k: int, impl: str, model: str, dtype: str, progress: Progress, last: bool
) -> None:
    """Speed part only, in a fresh worker: process ``k`` of the case (agreement already ran in
    process 0; the timer's warm-up calls stand in for it). A failure is recorded, not fatal."""
    from bench.results import append_records, make_record, read_records

    prof = effective_profile(run["profile"], impl, model)
    validated = validated_flag(read_records(run_dir), impl, model, dtype)
    flag = {True: "true", False: "false", None: "none"}[validated]
    timeout_s = float(run.get("timeout_s") or prof.get("timeout_s", 600))
    label = f"{impl} {model} {dtype} speed process {k + 1}"
    args = ["case", "--run-dir", str(run_dir), "--impl", impl, "--model", model, "--dtype", dtype,
            "--parts", "speed", "--validated", flag, "--process", str(k)]  # fmt: skip
    cache_env = prof.get("cache_env")
    extra_env = {cache_env: str(run_dir / "cache" / f"{impl}-{model}-{dtype}")} if cache_env else {}
    res = run_worker(args, run_dir, f"{impl}-{model}-{dtype}-p{k}", timeout_s, label, progress, extra_env)
    if (impl, model, dtype, speed_part(k)) not in done_parts(run_dir):
        status, text = failure(res, timeout_s)
        drop_unfinished(run_dir)
        append_records(run_dir, [make_record("error", run_id=run["run_id"], impl=impl, model=model, dtype=dtype,
                                             phase=speed_part(k), status=status, error=text)])  # fmt: skip
        _mark(run_dir, impl, model, dtype, speed_part(k), status)
        progress.note(f"  {label}: {status.upper()} during {res.last_phase!r}; recorded, carrying on")
    if extra_env and last:
        shutil.rmtree(extra_env[cache_env], ignore_errors=True)
    progress.finish(res.elapsed_s)


def warm_cache_probe(
    run_dir: Path,
    impl: str,
    model: str,
    dtype: str,
    timeout_s: float,
    label: str,
    progress: Progress,
    extra_env: dict[str, str],
) -> None:
    """First calls again in a fresh process over the cache the case filled: ``warm_cache_s`` of
    the case's ``compile`` records (patched in place; a failed probe leaves them missing)."""
    from bench.results import read_records

    args = ["warmprobe", "--run-dir", str(run_dir), "--impl", impl, "--model", model, "--dtype", dtype]
    res = run_worker(
        args, run_dir, f"{impl}-{model}-{dtype}-warm", timeout_s, f"{label} (warm cache)", progress, extra_env
    )
    warm = next((e["warm"] for e in res.events if "warm" in e), None)
    if not warm:
        return
    records = read_records(run_dir)
    for r in records:
        if r["kind"] == "compile" and (r["impl"], r["model"], r["dtype"]) == (impl, model, dtype):
            r["warm_cache_s"] = warm.get(r["phase"])
    write_records_atomic(run_dir, records)


def finish(run_dir: Path, ns: argparse.Namespace) -> None:
    from bench.results import read_records

    records = fill_derived(read_records(run_dir))
    write_records_atomic(run_dir, records)
    run_path = run_dir / "run.json"
    run = json.loads(run_path.read_text(encoding="utf-8"))
    run["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    run_path.write_text(json.dumps(run, indent=2, default=str), encoding="utf-8")
    print_summary(records)
    if not ns.no_report:
        try:
            from bench.report import write_report
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


def print_summary(records: list[dict[str, Any]]) -> None:
    """The final tables on stdout, at most 100 columns (``bench.terminal.summary_lines``)."""
    from bench.terminal import print_summary as show

    show(records)


if __name__ == "__main__":
    sys.exit(main())
