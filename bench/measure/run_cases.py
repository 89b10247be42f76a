"""The measurements of a run, each in its own worker process (``bench.measure.spawn``).

Order: availability of every implementation (one worker process), the machine's peak (a GEMM
per dtype, one worker), then for each available implementation, model and dtype one worker
process (``bench.measure.worker case``) running settings, agreement, speed and accuracy; then the further
speed processes of every case (``speed.processes``, process-major) and the peak again. A worker
that crashes, hangs past its timeout or is killed (OOM) is recorded as ``error`` records for the
parts it did not finish, and the run goes on. Parts already marked done (``bench.measure.run_state``)
are skipped, which is all ``--resume`` needs.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from bench.measure.ref_tree import code_root
from bench.measure.run_state import (
    done_parts,
    drop_unfinished,
    mark_done,
    speed_part,
    validated_flag,
    write_records_atomic,
)
from bench.measure.spawn import failure, run_worker
from bench.measure.terminal import WIDTH, Progress, cut
from bench.plan.profile import effective_profile, profile_parts
from bench.plan.sides import base_name, is_ref

AVAILABILITY_TIMEOUT_S = 300.0
PEAK_TIMEOUT_S = 600.0


def execute(run_dir: Path, timeout: float | None) -> None:
    """Every part of the run in ``run_dir`` not done yet; ``timeout`` (``--timeout``) overrides
    the run's and the profile's per-worker timeout."""
    from bench.core.threads import apply_pinning, apply_threads
    from bench.plan import backends

    run_dir = run_dir.resolve()  # side-B workers start in another folder
    run = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    apply_threads(run["threads"])
    apply_pinning(run.get("cpus"))
    for name, module in run.get("registry", {}).items():
        backends.register(name, module)
    profile = run["profile"]
    done = done_parts(run_dir)
    pinned = f", pinned to CPU {','.join(map(str, run['cpus']))}" if run.get("cpus") else ""
    where = f"profile {profile['name']}, threads {run['threads']}{pinned}"
    print(f"run {run['run_id']} -> {run_dir}  ({where})", flush=True)
    avail = check_availability(run_dir, run, done)
    for impl, (ok, reason, _) in avail.items():
        print(cut(f"  {impl:<14} {'available' if ok else 'skipped'}: {reason}".splitlines()[0], WIDTH), flush=True)

    cases = [
        (impl, model, dtype)
        for impl in run["impls"]
        if avail.get(impl, [False])[0]
        for model in run["models"]
        for dtype in run["dtypes"]
    ]
    order = {impl: n for n, impl in enumerate(dict.fromkeys(base_name(i) for i in run["impls"]))}
    cases.sort(key=lambda c: (order[base_name(c[0])], run["models"].index(c[1]), c[2], is_ref(c[0])))  # A, then B
    todo = [c for c in cases if any((*c, p) not in done for p in profile_parts(effective_profile(profile, c[0], c[1])))]
    need_peak = [w for w in ("before", "after") if ("numpy", None, None, f"peak-{w}") not in done]
    progress = Progress(len(todo) + len(need_peak) + planned_speed_processes(run, cases, done))
    try:
        run_cases(run_dir, run, todo, need_peak, progress, timeout or run.get("timeout_s"))
    finally:
        progress.close()


def check_availability(run_dir: Path, run: dict[str, Any], done: set) -> dict[str, list[Any]]:
    """``{impl: [available, reason, requires]}`` of every requested implementation, from one
    worker (or from the records, when a resumed run has it already)."""
    from bench.measure.results import append_records, make_record, read_records

    avail: dict[str, list[Any]] = {}
    if ("*", None, None, "availability") in done:
        for r in read_records(run_dir):
            if r["kind"] == "availability":
                avail[r["impl"]] = [r["available"], r["reason"], r.get("requires")]
        return avail
    rid = run["run_id"]
    got: dict[str, Any] = {}
    for side in (False, True):  # the working tree's backends, then REF's (an A/B run), each in its own worker
        names = [i for i in run["impls"] if is_ref(i) == side]
        if not names:
            continue
        res = run_worker(["availability", "--run-dir", str(run_dir), "--impls", ",".join(names)], run_dir,
                         "availability-ref" if side else "availability", AVAILABILITY_TIMEOUT_S, "availability",
                         None, code=code_root(names[0]))  # fmt: skip
        found = next((e["availability"] for e in res.events if "availability" in e), {})
        why = "availability worker failed: " + failure(res, 0)[1]
        got |= {n: found.get(n, [False, why, []]) for n in names}
    recs = []
    for impl in run["impls"]:
        ok, reason, requires = got[impl]
        avail[impl] = [ok, reason, requires]
        recs.append(make_record("availability", run_id=rid, impl=impl, model=None, dtype=None, available=ok,
                                reason=reason, requires=",".join(requires)))  # fmt: skip
        if not ok:
            recs.append(make_record("error", run_id=rid, impl=impl, model=None, dtype=None, phase="availability",
                                    status="skipped", error=reason))  # fmt: skip
    append_records(run_dir, recs)
    mark_done(run_dir, "*", None, None, "availability", "ok")
    return avail


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
    """The GEMM peak in its own worker, before or after the cases (``bench.measure.stability.peak_drift``
    compares them)."""
    from bench.measure.results import append_records, make_record

    args = ["peak", "--run-dir", str(run_dir), "--when", when]
    res = run_worker(args, run_dir, "peak", PEAK_TIMEOUT_S, "peak", progress)
    if res.returncode != 0 or res.timed_out:
        status, text = failure(res, PEAK_TIMEOUT_S)
        append_records(run_dir, [make_record("error", run_id=rid, impl="numpy", model=None, dtype=None,
                                             phase="peak", status=status, error=text)])  # fmt: skip
        mark_done(run_dir, "numpy", None, None, f"peak-{when}", status)
    progress.finish(res.elapsed_s, typical=False)  # a short GEMM: not a case's length


def run_case(
    run_dir: Path, run: dict[str, Any], impl: str, model: str, dtype: str, progress: Progress, timeout: float | None
) -> None:
    """The case's parts not done yet, in one worker; what it did not finish is recorded as errors."""
    from bench.measure.results import append_records, make_record, read_records

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
    res = run_worker(args, run_dir, f"{impl}-{model}-{dtype}", timeout_s, label, progress, extra_env, code_root(impl))
    done = done_parts(run_dir)
    missing = [p for p in parts if ((impl, None, dtype, p) if p == "settings" else (impl, model, dtype, p)) not in done]
    if missing:
        status, text = failure(res, timeout_s)
        drop_unfinished(run_dir)  # partial records of the part that died
        recs = [make_record("error", run_id=run["run_id"], impl=impl, model=None if p == "settings" else model,
                            dtype=dtype, phase=p, status=status, error=text) for p in missing]  # fmt: skip
        append_records(run_dir, recs)
        for p in missing:
            mark_done(run_dir, impl, None if p == "settings" else model, dtype, p, status)
        progress.note(f"  {label}: {status.upper()} during {res.last_phase!r}; recorded, carrying on")
    elif cache_env and "speed" in parts and not is_ref(impl):  # REF's compile times are not judged
        warm_cache_probe(run_dir, impl, model, dtype, timeout_s, label, progress, extra_env)
    if extra_env and speed_processes(prof) <= 1:  # the cache served its purpose (cold vs warm)
        shutil.rmtree(extra_env[cache_env], ignore_errors=True)
    progress.finish(res.elapsed_s)


def speed_processes(prof: dict[str, Any]) -> int:
    """P: how many worker processes measure each speed case (profile ``speed.processes``)."""
    return max(1, int(prof.get("speed", {}).get("processes", 1))) if "speed" in profile_parts(prof) else 1


def pending_speed_processes(run_dir: Path, run: dict[str, Any]) -> list[tuple[int, str, str, str]]:
    """``(process, impl, model, dtype)`` still to measure, process-major: every case's second
    process before any case's third, so a slow minute of the machine hits all alike. In an A/B
    run each case's two sides are neighbours, in turns: A then B in even processes (the first
    included), B then A in odd ones (A B B A A B), so neither side always runs right after the
    other (a worker that follows another may find the machine in another state)."""
    done = done_parts(run_dir)
    out = []
    cases = sorted({(i, m, d) for (i, m, d, p) in done if p == "speed" and m is not None})
    order = {impl: n for n, impl in enumerate(dict.fromkeys(base_name(i) for i in run["impls"]))}

    def turn(c: tuple[str, str, str], k: int) -> tuple:
        model = run["models"].index(c[1]) if c[1] in run["models"] else 99
        return (model, order.get(base_name(c[0]), 99), c[2], is_ref(c[0]) != (k % 2 == 1))

    for k in range(1, max((speed_processes(effective_profile(run["profile"], i, m)) for i, m, _ in cases), default=1)):
        for impl, model, dtype in sorted(cases, key=lambda c, k=k: turn(c, k)):
            if k < speed_processes(effective_profile(run["profile"], impl, model)):
                if (impl, model, dtype, speed_part(k)) not in done:
                    out.append((k, impl, model, dtype))
    return out


def run_speed_process(
    run_dir: Path, run: dict[str, Any], k: int, impl: str, model: str, dtype: str, progress: Progress, last: bool
) -> None:
    """Speed part only, in a fresh worker: process ``k`` of the case (agreement already ran in
    process 0; the timer's warm-up calls stand in for it). A failure is recorded, not fatal."""
    from bench.measure.results import append_records, make_record, read_records

    prof = effective_profile(run["profile"], impl, model)
    validated = validated_flag(read_records(run_dir), impl, model, dtype)
    flag = {True: "true", False: "false", None: "none"}[validated]
    timeout_s = float(run.get("timeout_s") or prof.get("timeout_s", 600))
    label = f"{impl} {model} {dtype} speed process {k + 1}"
    args = ["case", "--run-dir", str(run_dir), "--impl", impl, "--model", model, "--dtype", dtype,
            "--parts", "speed", "--validated", flag, "--process", str(k)]  # fmt: skip
    cache_env = prof.get("cache_env")
    extra_env = {cache_env: str(run_dir / "cache" / f"{impl}-{model}-{dtype}")} if cache_env else {}
    res = run_worker(
        args, run_dir, f"{impl}-{model}-{dtype}-p{k}", timeout_s, label, progress, extra_env, code_root(impl)
    )
    if (impl, model, dtype, speed_part(k)) not in done_parts(run_dir):
        status, text = failure(res, timeout_s)
        drop_unfinished(run_dir)
        append_records(run_dir, [make_record("error", run_id=run["run_id"], impl=impl, model=model, dtype=dtype,
                                             phase=speed_part(k), status=status, error=text)])  # fmt: skip
        mark_done(run_dir, impl, model, dtype, speed_part(k), status)
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
    from bench.measure.results import read_records

    args = ["warmprobe", "--run-dir", str(run_dir), "--impl", impl, "--model", model, "--dtype", dtype]
    res = run_worker(
        args,
        run_dir,
        f"{impl}-{model}-{dtype}-warm",
        timeout_s,
        f"{label} (warm cache)",
        progress,
        extra_env,
        code_root(impl),
    )
    warm = next((e["warm"] for e in res.events if "warm" in e), None)
    if not warm:
        return
    records = read_records(run_dir)
    for r in records:
        if r["kind"] == "compile" and (r["impl"], r["model"], r["dtype"]) == (impl, model, dtype):
            r["warm_cache_s"] = warm.get(r["phase"])
    write_records_atomic(run_dir, records)
