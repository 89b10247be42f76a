"""The regression gate: ``python -m bench compare BASELINE CURRENT``.

Each argument is a run directory (``runs/<run_id>``) or ``runs/latest``. A readable
table per check is printed; the exit status is

- 0: no failure (warnings and notes may be printed);
- 1: a gate failed (rules below);
- 2: bad input: a run dir that does not exist or is not a run dir, a results file from a
  newer schema (``SchemaError``) or malformed, a run with no records, an unknown
  implementation or model in ``--impls`` / ``--models``.

Gate rules (FAIL means exit 1):

1. Agreement: any agreement row of CURRENT with ``ok`` false, or an ``error`` record with
   status ``disagrees``, fails that implementation (whatever the baseline said).
2. Crashes: an ``error`` record in CURRENT with status crash | timeout | oom |
   not_implemented for (impl, model, phase) fails unless BASELINE has an error of the same
   status for the same (impl, model, phase) (a known, unchanged failure is a warning).
   An implementation available in BASELINE and unavailable (skipped) in CURRENT is a
   WARNING, not a failure: availability depends on the machine (no GPU on CI, library not
   installed), and the skip reason is printed. One absent from CURRENT altogether (not
   selected) is a note. One new in CURRENT has no baseline and is a note.
3. Accuracy: per (impl, model, dtype), the final test accuracy (last epoch present in
   both runs, mean over the seeds both ran) must not fall below the baseline's band:
   ``cur < base - (k * sqrt(2 * p * (1 - p) / n) + floor)`` fails, with ``p`` the baseline
   accuracy, ``n`` the test-set size (``test_samples``; 10000, the MNIST test set, when
   not recorded), ``k = 4`` (sigmas of the difference of two binomial estimates) and
   ``floor = 0.005``. A NaN current accuracy (diverged) fails. Different training
   budgets (train_samples or steps) are reported as not comparable (warning). A baseline
   whose band reaches down to what a model at chance scores (``1/classes`` plus ``k``
   binomial sigmas) is "not gated: baseline at chance": that row could not fail.
4. Speed, robust to another machine and noisy neighbours: absolute times are never
   compared. For each case (impl, model, dtype, phase, batch_size) present in both runs
   the in-run ratio ``r = t_impl / t_ref`` is formed, with ``t_ref`` the same case of
   ``numpy`` in the same run; ``numpy`` itself, and a case numpy did not measure in both runs
   (pure Python runs at batch 1 only), is referred to the in-run float32 GEMM calibration
   (``peak`` record). The statistic is ``R = r_cur / r_base`` (> 1: slower relative to the
   reference). A case's figure is its fastest worker process's median
   (``gate_speed.center``: a process that ran through a neighbour's burst is slower, never
   faster). Its confidence interval (``--ci``, two-sided, default 0.99) comes from a
   bootstrap (``--bootstrap`` replicates, default 2000, fixed seed: the gate is deterministic)
   with both noises a run has (``gate_speed._Boot``): the rounds of each process are
   resampled, and each replicate is multiplied by a process term drawn from the
   implementation's process-to-process spread (``gate_speed.process_sd``: the gap between a
   case's two fastest processes, pooled over the cases of both runs; floor ``min_sd`` 0.02,
   ``default_sd`` 0.15 when an implementation has fewer than 2 such cases). A set shared by
   several cases (the numpy reference, the GEMM) is resampled consistently; the process term
   is drawn once per (run, impl, model, dtype), as the phases and batches of a case share
   their worker processes.
   - **The train_step row of each implementation** (``model == "ALL"``, ``phase ==
     "train_step"``: the geometric mean of R over its models and batch sizes, with the CI of
     the same replicates' geometric means) FAILS when the slowdown is beyond noise and nearer
     the threshold than no change: ``CI_low > 1`` and ``R >= sqrt(1.25) = 1.118``
     (``--threshold``; ``_phase_verdict``). It is ok when ``CI_high <= 1.25`` (a 1.25x
     slowdown is ruled out) and inconclusive otherwise. This rule needs the process spread
     measured (>= 2 processes in every set) and numpy as the reference; else the row is judged
     like a case. A row with ``R >= 1.118`` whose ``CI_low`` is not above 1 is a *suspect*
     (inconclusive, ``suspect`` true): rule 5 re-measures it, and the re-measurement fails it
     when its R is past 1.118 too (``--first-measurement``: reproduced). Why the interval alone
     cannot decide these: its process term assumes normal process-to-process noise, and on this
     machine kind the noise is one-sided (a disturbed process is slower, never faster). In 20
     real A/A pairs the train_step row's log R had a run-to-run sd of 0.030 (R 0.950-1.053);
     the 1.25x pairs' intervals implied 0.032-0.141, the widest in the noisier minutes, which
     left 3 of 10 real 1.25x slowdowns (R 1.14-1.30) inconclusive.
   - **Every other row** (each case, the other phases' rows, the all-cases row ``phase ==
     "ALL"``) FAILS only when its whole interval lies above the threshold: ``CI_low > 1.25``
     (``--threshold``) against numpy, ``CI_low > 1.25`` (``--peak-threshold``) against the
     GEMM. torch's forward (2 ms for the mlp), untouched, moved 13-18 % against numpy between
     two real runs minutes apart (a plain one and one whose train_step alone was slowed) with
     every process agreeing: a machine-state shift that no within-run statistic sees, so
     the sharper rule would fail A/A pairs there.
   - Measured on this machine kind (2 cores, 2026-11-23), quick profile (1 thread, every
     worker pinned to the last CPU, 3 processes per case), numpy + torch, torch's train_step
     slowed on purpose (``bench/measure/inject.py``), each run gated against a plain run: see the
     README's gate paragraph for the counts. Unpinned at 2 threads, the in-run ratios had a
     run-to-run sd of 3-15 % (pinned: 0.3-4.7 %), and the old rule (median of processes, whole
     interval above 1.25) caught 3 of 25 injected 1.25x slowdowns.
   - A case with fewer than 5 rounds (``min_rounds``) in any of its four sample sets (pure
     Python gets 2-5) cannot fail alone: a bootstrap of 2-4 values understates the spread;
     it is a WARN and counts in the aggregate.
   - ``CI_high < 1/threshold`` is reported as faster (a note: refresh the baseline).
   - A row whose interval cannot decide (it contains the threshold) says "inconclusive" (too
     noisy), never "ok", does not fail, and the final line counts such rows and asks for a
     repeat.
   - The committed baseline merges a few runs (``python -m bench baseline``): a baseline case
     whose processes all ran slow would otherwise shift every later comparison.
   Without raw samples a set is its median alone (no spread). A case with no in-run
   reference, or measured in only one run, is a note.
5. Confirmation (``python -m bench run --gate BASELINE``, what CI runs): on this machine
   kind a whole worker process now and then runs 1.5-1.7x slower than its neighbours
   (seen for NumPy and for PyTorch, same code, same data), which no in-process statistic
   can see. When speed is the *only* failing check, or a train_step row is a suspect
   (rule 4), the run re-measures those implementations (and NumPy, their reference) in fresh
   worker processes and gates on that confirmation run, with the first measurement beside it
   (``--first-measurement``): a regression fails only when it reproduces, and a suspect fails
   when the confirmation's R is past 1.118 as well (two independent measurements past the
   midpoint; on the A/A spread above, each has a chance well under 1e-3). Agreement, accuracy
   and crash failures are never re-measured.
6. A gate that compared nothing (no speed case and no accuracy row judged in both runs:
   the baseline's implementations or models were not run) FAILS: it cannot PASS. A row
   faster beyond noise was judged (its note says so); a row noted as not gated was not.
7. Required backends (``NNBENCH_REQUIRE``, comma-separated; tox sets it): one unavailable
   in CURRENT FAILS, where an optional one only warns (rule 2).
8. Machine kind (``bench.judge.baseline.select``): BASELINE may be a folder of baselines, one per
   machine kind (usable cores and SIMD extensions); the one of CURRENT's kind is compared. The
   in-run ratios of rule 4 survive a faster or slower machine of one kind, not another kind
   (Keras's cnn against NumPy is ~2x apart between the AVX2 and the AVX-512 2-core machines).
   With no baseline of CURRENT's kind, the closest one is compared and every speed row is a
   note ("not gated", with the verdict it would have had): rules 1-3 and 6-7 still apply, and
   the verdict line says that speed was not gated, unless rule 9 gates it.
9. A/B (``python -m bench run --gate-ref REF``, and ``--gate DIR`` when DIR has no baseline of
   CURRENT's machine kind: REF is then the commit the nearest baseline was taken at, else the
   merge base with the default branch; ``bench.measure.ref_tree``). One run holds both sides, measured
   interleaved case by case and process by process on the same machine; ``compare --ab RUN``
   reads REF's side as BASELINE and the working tree's as CURRENT, and rules 1-7 apply as
   written. Rule 4 compares each case with its REF twin directly (``R = t_tree / t_ref``,
   ``GateConfig.direct``): an in-run reference would only add its own noise, and NumPy is judged
   like every other implementation. A backend on one side only is a note (new, removed), never
   gated; the confirmation (rule 5) re-measures both sides again.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from bench.judge.baseline import BaselineError, Selection, select
from bench.judge.checks import _impls, check_accuracy, check_agreement, check_status, required_impls  # noqa: F401
from bench.judge.speed import (
    FAIL,
    FASTER,
    INCONCLUSIVE,
    NOTE,
    OK,
    WARN,
    GateConfig,
    check_speed,
    sharp_rows,
)
from bench.judge.text import print_tables
from bench.measure.frames import RunDirError, load_run, read_run_meta, resolve_run_dir
from bench.measure.results import SchemaError
from bench.plan.sides import base_name, is_ref, tree_label


class BadInput(ValueError):
    """Input the gate cannot judge (exit 2)."""


Frames = dict[str, pd.DataFrame]


def compare_frames(
    base: Frames,
    cur: Frames,
    cfg: GateConfig | None = None,
    first: tuple[Frames, Frames] | None = None,
    speed_note: str | None = None,
    ab: dict[str, Any] | None = None,
) -> dict[str, pd.DataFrame]:
    """All checks; each table has ``verdict`` (FAIL | WARN | ok | note) and ``detail``.
    ``first``: CURRENT is a confirmation run, and this is the first measurement's (baseline,
    current) pair (rule 5). ``speed_note``: why speed cannot be gated (rule 8): every speed row
    becomes a note. ``ab``: BASE and CURRENT are the two sides of one A/B run (rule 9; its
    ``gate_ref``, for the backends only one side has)."""
    cfg = cfg or GateConfig()
    before = sharp_rows(check_speed(*first, cfg), cfg) if first is not None else None
    speed = check_speed(base, cur, cfg, before)
    names = ("REF", "the working tree") if ab is not None else ("baseline", "current")
    status = check_status(base, cur, required_impls(), names)
    if ab is not None and ab.get("removed"):
        gone = [{"impl": i, "verdict": NOTE, "detail": "removed: in REF, not in the working tree (not gated)"}
                for i in ab["removed"]]  # fmt: skip
        status = pd.concat([status, pd.DataFrame(gone)], ignore_index=True)
    return {
        "status": status,
        "agreement": check_agreement(cur),
        "accuracy": check_accuracy(base, cur, cfg),
        "speed": ungated(speed, speed_note) if speed_note else speed,
    }


def ungated(speed: pd.DataFrame, why: str) -> pd.DataFrame:
    """Speed rows against a baseline of another machine kind (rule 8; ``why``: the selection's
    ``speed_note``, printed once): each a note that keeps the verdict it would have had in its
    detail; none is a suspect (nothing is re-measured)."""
    if not len(speed):
        return speed
    out = speed.copy()
    would = out["verdict"].astype(str)
    detail = out["detail"].fillna("").astype(str) if "detail" in out else pd.Series("", index=out.index)
    out["detail"] = [f"not gated, baseline of another machine kind (would be {v})" + (f": {d}" if d else "")
                     for v, d in zip(would, detail, strict=True)]  # fmt: skip
    out["verdict"] = NOTE
    if "suspect" in out:
        out["suspect"] = False
    return out


def compared_nothing(tables: dict[str, pd.DataFrame]) -> bool:
    """No speed case and no accuracy row was judged in both runs (the baseline's
    implementations or models were not run): such a gate cannot PASS. A row found faster
    beyond noise was judged (a note, not a failure); a note for a row left ungated was not."""
    return not any(_judged(tables.get(k)) for k in ("speed", "accuracy"))


def _judged(t: pd.DataFrame | None) -> bool:
    if t is None or not len(t):
        return False
    faster = t["detail"].fillna("").astype(str).str.startswith(FASTER) if "detail" in t else False
    return bool((t["verdict"].isin((OK, FAIL, WARN, INCONCLUSIVE)) | ((t["verdict"] == NOTE) & faster)).any())


def failed(tables: dict[str, pd.DataFrame]) -> bool:
    return compared_nothing(tables) or any(len(t) and (t["verdict"] == FAIL).any() for t in tables.values())


def inconclusive(tables: dict[str, pd.DataFrame]) -> int:
    """How many rows could not be decided (too noisy): the run should be repeated."""
    return sum(int((t["verdict"] == INCONCLUSIVE).sum()) for t in tables.values() if len(t))


def speed_only_failures(baseline: str | None, current: str) -> dict[str, set[str]] | None:
    """``{impl: {models}}`` whose speed rows fail or are suspects (``suspect``: a train_step row
    past the decision point that its interval could not decide), when speed is the only failing
    check; ``None`` when another check fails too (those are not re-measured). A failing
    aggregate row (model ``ALL``) names every model the implementation was measured on in CURRENT
    (a model only the baseline has is not re-measured: the confirmation run could not compare it).
    ``baseline`` None: CURRENT is an A/B run, judged against its own REF side."""
    if baseline is None:
        base, cur, ab = load_ab(current)
        tables = compare_frames(base, cur, GateConfig(direct=True), ab=ab)
    else:
        base, cur, selection = load_pair(baseline, current)
        tables = compare_frames(base, cur, speed_note=selection.speed_note)
    return _again(tables)


def _again(tables: dict[str, pd.DataFrame]) -> dict[str, set[str]] | None:
    if any(len(t) and (t["verdict"] == FAIL).any() for k, t in tables.items() if k != "speed"):
        return None
    sp = tables["speed"]
    out: dict[str, set[str]] = {}
    again = (sp["verdict"] == FAIL) | (sp["suspect"].eq(True) if "suspect" in sp else False)
    for _, row in sp[again].iterrows() if len(sp) else []:
        measured = sp["R"].notna() if "R" in sp else pd.Series(True, index=sp.index)
        models = set(sp[(sp["impl"] == row["impl"]) & (sp["model"] != "ALL") & measured]["model"])
        out.setdefault(row["impl"], set()).update(models if row["model"] == "ALL" else {row["model"]})
    return out


# ----------------------------------------------------------------------------- CLI


def _filter(frames: dict[str, pd.DataFrame], impls: list[str] | None, models: list[str] | None) -> dict:
    out = {}
    for k, df in frames.items():
        m = pd.Series(True, index=df.index)
        if impls:
            m &= df["impl"].isin(impls) | df["impl"].isna()
        if models:
            m &= df["model"].isin(models) | df["model"].isna()
        out[k] = df[m]
    return out


def _validate_names(kind: str, wanted: list[str] | None, known: set[str]) -> None:
    unknown = sorted(set(wanted or ()) - known)
    if unknown:
        raise BadInput(f"unknown {kind} {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def _check_names(impls: list[str] | None, models: list[str] | None, frames: list[dict[str, pd.DataFrame]]) -> None:
    _validate_names("implementation", impls, _known_impls(frames))
    _validate_names("model", models, _known_models(frames))


def _known_impls(frames: list[dict[str, pd.DataFrame]]) -> set[str]:
    try:
        from bench.plan import backends

        names = set(backends.names())
    except Exception:
        names = set()
    return names | {i for f in frames for i in _impls(f)}


def _known_models(frames: list[dict[str, pd.DataFrame]]) -> set[str]:
    from bench.plan.presets import preset_names

    return set(preset_names()) | {str(m) for f in frames for df in f.values() for m in df["model"].dropna().unique()}


def load_pair(baseline: str, current: str) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame], Selection]:
    """(baseline frames, current frames, the baseline selected for CURRENT's machine kind)."""
    selection = select_baseline(baseline, current)
    return _load("baseline", str(selection.path)), _load("current", current), selection


def split_sides(frames: Frames) -> tuple[Frames, Frames]:
    """An A/B run's frames as (REF's side, the working tree's side), REF's names without their
    ``@ref`` (``bench.plan.sides``); records of no implementation (the GEMM peak) go to both."""
    base: Frames = {}
    cur: Frames = {}
    for kind, df in frames.items():
        if "impl" not in df:
            base[kind], cur[kind] = df, df
            continue
        ref = df["impl"].map(is_ref)
        shared = df["impl"].isna()
        base[kind] = df[ref | shared].assign(impl=df.loc[ref | shared, "impl"].map(lambda i: base_name(i) if i else i))
        cur[kind] = df[~ref | shared]
    return base, cur


def load_ab(run: str) -> tuple[Frames, Frames, dict[str, Any]]:
    """(REF's side, the working tree's side, the run's ``gate_ref``) of an A/B run (rule 9)."""
    frames = _load("A/B run", run)
    meta = read_run_meta(resolve_run_dir(run))
    if not meta.get("gate_ref"):
        raise BadInput(f"{run} is not an A/B run (run.json has no gate_ref: it was not run with --gate-ref)")
    base, cur = split_sides(frames)
    return base, cur, meta["gate_ref"]


def select_baseline(baseline: str, current: str) -> Selection:
    """The baseline run of CURRENT's machine kind (rule 8)."""
    try:
        env = read_run_meta(resolve_run_dir(current)).get("env")
    except RunDirError as e:
        raise BadInput(f"current: {e}") from e
    try:
        return select(baseline, env)
    except (BaselineError, OSError) as e:
        raise BadInput(f"baseline: {e}") from e


def _load(label: str, path: str) -> dict[str, pd.DataFrame]:
    try:
        frames = load_run(path)
    except RunDirError as e:
        raise BadInput(f"{label}: {e}") from e
    except SchemaError as e:
        raise BadInput(f"{label}: {e}") from e
    if not frames:
        raise BadInput(f"{label}: {path} has no records")
    return frames


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", metavar="RUN",
                    help="BASELINE CURRENT: a baseline (run dir, or a folder of machine-kind baselines: "
                         "bench/baselines/quick) and the current run dir (runs/latest); "
                         "with --ab, one A/B run dir")  # fmt: skip
    ap.add_argument("--ab", action="store_true",
                    help="the run was measured with --gate-ref: gate its working tree's side against its REF side "
                         "(rule 9)")  # fmt: skip
    ap.add_argument("--impls", help="comma-separated implementations to compare (default: all)")
    ap.add_argument("--models", help="comma-separated models to compare (default: all)")
    d = GateConfig()
    ap.add_argument("--threshold", type=float, default=d.threshold, help="relative slowdown vs numpy that fails")
    ap.add_argument("--peak-threshold", type=float, default=d.peak_threshold, help="numpy vs GEMM slowdown that fails")
    ap.add_argument("--ci", type=float, default=d.ci, help="two-sided bootstrap confidence level")
    ap.add_argument("--bootstrap", type=int, default=d.n_boot, help="bootstrap resamples")
    ap.add_argument("--acc-sigmas", type=float, default=d.acc_sigmas,
                    help="accuracy band: binomial sigmas of the difference of two test-set estimates")  # fmt: skip
    ap.add_argument("--acc-floor", type=float, default=d.acc_floor, help="accuracy band: absolute slack added")
    ap.add_argument("--wide", action="store_true", help="print every column (wider than a terminal)")
    ap.add_argument("--label", default="RESULT", help="the word before the verdict line (run --gate sets it)")
    ap.add_argument("--first-measurement", metavar="RUN_DIR",
                    help="CURRENT re-measures this run (same code): a train_step row past the decision point "
                         "in both fails as reproduced (rule 5; run --gate sets it)")  # fmt: skip
    args = ap.parse_args(argv)
    if len(args.runs) != (1 if args.ab else 2):
        ap.print_usage(sys.stderr)
        print("error: give BASELINE CURRENT, or --ab RUN", file=sys.stderr)
        return 2
    args.baseline, args.current = (None, args.runs[0]) if args.ab else args.runs
    cfg = GateConfig(
        threshold=args.threshold,
        peak_threshold=args.peak_threshold,
        ci=args.ci,
        n_boot=args.bootstrap,
        acc_sigmas=args.acc_sigmas,
        acc_floor=args.acc_floor,
        direct=args.ab,
    )
    impls = [s.strip() for s in args.impls.split(",") if s.strip()] if args.impls else None
    models = [s.strip() for s in args.models.split(",") if s.strip()] if args.models else None
    if args.ab:
        return main_ab(args, cfg, impls, models)
    try:
        base, cur, selection = load_pair(args.baseline, args.current)
        first = _load("first measurement", args.first_measurement) if args.first_measurement else None
        _check_names(impls, models, [base, cur])
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    base, cur = _filter(base, impls, models), _filter(cur, impls, models)
    pair = (base, _filter(first, impls, models)) if first is not None else None
    tables = compare_frames(base, cur, cfg, pair, selection.speed_note)
    shown = [("baseline", str(selection.path)), ("current", args.current)]
    for label, path in shown + ([("first measurement", args.first_measurement)] if first is not None else []):
        meta = read_run_meta(resolve_run_dir(path))
        profile = meta.get("profile", "?")
        profile = profile.get("name", "?") if isinstance(profile, dict) else profile
        print(f"{label}: {path} (run {meta.get('run_id', '?')}, profile {profile})")
        if meta.get("injected_slowdown"):
            print(f"  {label} has an injected slowdown (gate validation): {meta['injected_slowdown']}")
    print(f"machine kind: current {selection.current_kind or 'unknown'}, baseline {selection.kind or 'unknown'}"
          + ("" if selection.path == Path(args.baseline) else f" (picked from {args.baseline})"))  # fmt: skip
    if selection.speed_note:
        print(f"WARNING: {selection.speed_note}")
    print_tables(tables, sys.stdout, args.wide)
    print("\n" + verdict_line(tables, args.label, selection.speed_note))
    return 1 if failed(tables) else 0


def main_ab(args: argparse.Namespace, cfg: GateConfig, impls: list[str] | None, models: list[str] | None) -> int:
    """``compare --ab RUN``: the working tree's side of an A/B run against its REF side (rule 9)."""
    try:
        base, cur, ab = load_ab(args.current)
        first = load_ab(args.first_measurement)[:2] if args.first_measurement else None
        _check_names(impls, models, [base, cur])
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    base, cur = _filter(base, impls, models), _filter(cur, impls, models)
    pair = (_filter(first[0], impls, models), _filter(first[1], impls, models)) if first else None
    tables = compare_frames(base, cur, cfg, pair, ab=ab)
    meta = read_run_meta(resolve_run_dir(args.current))
    print(f"A/B run: {args.current} (run {meta.get('run_id', '?')})")
    print(f"  A: {tree_label(meta.get('tree'))}")
    print(f"  B: REF {ab.get('rev')} = {str(ab.get('commit'))[:10]}" + (f" ({ab['why']})" if ab.get("why") else ""))
    if args.first_measurement:
        print(f"first measurement: {args.first_measurement}")
    if meta.get("injected_slowdown"):
        print(f"  it has an injected slowdown (gate validation): {meta['injected_slowdown']}")
    print_tables(tables, sys.stdout, args.wide)
    print("\n" + verdict_line(tables, args.label, ab=ab))
    return 1 if failed(tables) else 0


def verdict_line(
    tables: dict[str, pd.DataFrame], label: str = "RESULT", speed_note: str | None = None, ab: dict | None = None
) -> str:
    """The one line that states the gate's verdict, with what it could not decide, and whether
    speed was gated at all (rule 8) or how (rule 9: ``ab``, an A/B run's ``gate_ref``)."""
    n_fail = sum(int((t["verdict"] == FAIL).sum()) for t in tables.values() if len(t))
    n_inc = inconclusive(tables)
    if compared_nothing(tables):
        return f"{label}: FAIL (the gate compared nothing: no speed case or accuracy row in both runs)"
    text = f"{label}: {'FAIL' if failed(tables) else 'PASS'} ({n_fail} failing"
    text += f", {n_inc} inconclusive: too noisy, repeat the run to decide them" if n_inc else ""
    text += "; SPEED NOT GATED: no baseline of this machine kind" if speed_note else ""
    if ab is not None:
        text += f"; {ab['why']}" if ab.get("why") else f"; A/B against {ab.get('rev')} ({str(ab.get('commit'))[:10]})"
    return text + "; rules: bench/judge/compare.py)"


if __name__ == "__main__":
    raise SystemExit(main())
