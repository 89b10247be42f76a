"""``python -m bench run --gate BASELINE``: the regression gate after a run, with its confirmation.

The finished run is compared with the baseline (``bench.judge.compare``). A failure that is speed only,
or a suspect (a train_step row past the decision point that its interval could not decide), is
re-measured before it counts: those implementations (and NumPy) on their models, in a second run
of fresh worker processes (``<run>-confirm/``), compared again with the first measurement beside
it; the gate follows that second comparison (``bench.judge.compare`` docstring, rule 5). The one final
verdict is printed last, written to the run's ``gate.json`` and shown at the top of its report.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bench.measure.results import EXIT_CASES_FAILED

if TYPE_CHECKING:
    from bench.judge.baseline import Selection


def gate(ns: argparse.Namespace, run_dir: Path, rerun: Callable[[list[str]], int]) -> int:
    """Compare with the baseline; a speed-only failure, or a suspect, must reproduce in fresh
    worker processes before it fails the gate. ``rerun`` is the run command (``bench.run.main``),
    given the confirmation run's arguments."""
    from bench.judge.compare import BadInput, select_baseline, speed_only_failures
    from bench.judge.compare import main as compare_main

    meta = run_dir / "run.json"
    ab = json.loads(meta.read_text(encoding="utf-8")).get("gate_ref") if meta.is_file() else None
    if ab:
        return gate_ab(ns, run_dir, rerun, ab)
    try:
        selection = select_baseline(ns.gate, str(run_dir))
        baseline = str(selection.path)
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return final_verdict(ns, run_dir, 2, None)
    print(f"\nregression gate: {baseline} -> {run_dir} (machine kind {selection.current_kind})", flush=True)
    first = "first measurement (speed failures and suspects are re-measured before the verdict)"
    rc = compare_main([ns.gate, str(run_dir), "--label", first])
    suspects = speed_only_failures(ns.gate, str(run_dir)) if rc in (0, 1) else None
    if not suspects:
        return final_verdict(ns, run_dir, rc, None, selection)
    impls = sorted(set(suspects) | {"numpy"})
    models = sorted(set().union(*suspects.values()))
    print(
        f"\nspeed-only failure or suspect: re-measuring {', '.join(impls)} on {', '.join(models)} in fresh processes",
        flush=True,
    )
    confirm = [
        "--profile", str(ns.profile), "--out", str(run_dir.parent / f"{run_dir.name}-confirm"),
        "--impls", ",".join(impls), "--models", ",".join(models), "--no-report",
    ]  # fmt: skip
    confirm += _passed_on(ns)
    if rerun(confirm) not in (0, EXIT_CASES_FAILED):  # a crashed case is judged as missing
        return final_verdict(ns, run_dir, 1, None, selection)
    confirm_dir = run_dir.parent / f"{run_dir.name}-confirm" / "latest"
    rc = compare_main([ns.gate, str(confirm_dir), "--impls", ",".join(impls), "--models", ",".join(models),
                       "--first-measurement", str(run_dir), "--label", "confirmation"])  # fmt: skip
    print(f"confirmation run: {'regression reproduced' if rc else 'not reproduced (a slow process, not the code)'}; "
          "the first measurement's failing and suspect speed rows above were re-measured", flush=True)  # fmt: skip
    return final_verdict(ns, run_dir, rc, confirm_dir.resolve(), selection)


def _passed_on(ns: argparse.Namespace) -> list[str]:
    """The first run's options a confirmation run keeps."""
    out = []
    for opt in ("threads", "data_dir", "timeout"):
        if getattr(ns, opt, None):
            out += [f"--{opt.replace('_', '-')}", str(getattr(ns, opt))]
    return out + (["--no-pin"] if getattr(ns, "no_pin", False) else [])


def gate_ab(ns: argparse.Namespace, run_dir: Path, rerun: Callable[[list[str]], int], ab: dict) -> int:
    """The gate of an A/B run (``bench.judge.compare`` rule 9): its working tree's side against its REF
    side; a speed-only failure or suspect is re-measured, both sides again, in fresh processes."""
    from bench.judge.compare import main as compare_main
    from bench.judge.compare import speed_only_failures

    print(f"\nregression gate: the working tree against {ab['rev']} ({ab['commit'][:10]}), measured side by side "
          f"in {run_dir}" + (f"\n{ab['why']}" if ab.get("why") else ""), flush=True)  # fmt: skip
    first = "first measurement (speed failures and suspects are re-measured before the verdict)"
    rc = compare_main(["--ab", str(run_dir), "--label", first])
    suspects = speed_only_failures(None, str(run_dir)) if rc in (0, 1) else None
    if not suspects:
        return final_verdict(ns, run_dir, rc, None, ab=ab)
    impls, models = sorted(suspects), sorted(set().union(*suspects.values()))
    print(f"\nspeed-only failure or suspect: re-measuring {', '.join(impls)} on {', '.join(models)}, "
          "the working tree's and REF's, in fresh processes", flush=True)  # fmt: skip
    out = run_dir.parent / f"{run_dir.name}-confirm"
    confirm = ["--profile", str(ns.profile), "--out", str(out), "--impls", ",".join(impls),
               "--models", ",".join(models), "--no-report", "--gate-ref", ab["commit"], "--no-gate",
               *_passed_on(ns)]  # fmt: skip
    if rerun(confirm) not in (0, EXIT_CASES_FAILED):  # a crashed case is judged as missing
        return final_verdict(ns, run_dir, 1, None, ab=ab)
    confirm_dir = out / "latest"
    rc = compare_main(["--ab", str(confirm_dir), "--impls", ",".join(impls), "--models", ",".join(models),
                       "--first-measurement", str(run_dir), "--label", "confirmation"])  # fmt: skip
    print(f"confirmation run: {'regression reproduced' if rc else 'not reproduced (a slow process, not the code)'}; "
          "the first measurement's failing and suspect speed rows above were re-measured", flush=True)  # fmt: skip
    return final_verdict(ns, run_dir, rc, confirm_dir.resolve(), ab=ab)


def final_verdict(
    ns: argparse.Namespace,
    run_dir: Path,
    rc: int,
    confirm_dir: Path | None,
    selection: Selection | None = None,
    ab: dict | None = None,
) -> int:
    """The one final line of the gate, also written to the run's ``gate.json`` and summary."""
    from bench.report.run_report import GATE_FILE

    verdict = {0: "PASS", 1: "FAIL"}.get(rc, f"ERROR (exit {rc})")
    baseline = str(selection.path) if selection else str(ns.gate)
    not_gated = selection.speed_note if selection else None
    if not_gated and getattr(ns, "speed_not_gated", None):
        not_gated += f" (no A/B either: {ns.speed_not_gated})"
    if ab is not None:
        baseline = f"REF {ab['rev']} ({ab['commit'][:10]}), measured side by side in the same run"
    info = {"verdict": verdict, "baseline": baseline, "confirmation": confirm_dir is not None,
            "confirm_dir": str(confirm_dir) if confirm_dir else None,
            "machine_kind": selection.current_kind if selection else None,
            "baseline_kind": selection.kind if selection else None,
            "speed_not_gated": not_gated, "ab": ab and {k: ab.get(k) for k in ("rev", "commit", "why")},
            "speed_rows": speed_rows(run_dir, confirm_dir, selection, ab)}  # fmt: skip
    (run_dir / GATE_FILE).write_text(json.dumps(info, indent=1, default=str) + "\n", encoding="utf-8")
    if not ns.no_report:
        try:
            from bench.report.run_report import write_report

            write_report(run_dir)
        except Exception as e:  # the verdict stands without its report
            print(f"warning: report failed: {type(e).__name__}: {e}", file=sys.stderr)
    how = "after re-measuring the speed failures and suspects" if confirm_dir else "no confirmation needed"
    slower = [f"{r['impl']} {r['model'] if r['model'] != 'ALL' else 'train_step'} R {r['R']:.3f}"
              for r in info["speed_rows"] if r.get("verdict") == "FAIL" and r.get("R") is not None]  # fmt: skip
    if slower:
        how = f"speed FAILS: {', '.join(slower)}; {how}"
    if not_gated:
        how += "; SPEED NOT GATED: no baseline of this machine kind"
    if ab is not None and ab.get("why"):
        how += f"; {ab['why']}"
    print(f"\nRESULT: {verdict} (regression gate against {baseline}; {how})", flush=True)
    return rc


def speed_rows(run_dir: Path, confirm_dir: Path | None, selection: Selection | None, ab: dict | None) -> list[dict]:
    """The train_step rows of the gate's speed table, for the report's headline: per implementation
    and model, both sides' figures (seconds, or in-run ratios against a stored baseline), their
    ratio R with its interval and the verdict; an implementation the confirmation re-measured has
    the confirmation's rows (``measurement``: first or confirmation)."""
    try:
        rows = _train_step_rows(run_dir, selection, ab, "first")
        if confirm_dir is not None:  # judged as the confirmation was: beside the first measurement
            again = _train_step_rows(confirm_dir, selection, ab, "confirmation", first_dir=run_dir)
            redone = {r["impl"] for r in again}
            rows = [r for r in rows if r["impl"] not in redone] + again
    except Exception as e:  # the verdict stands without its table
        print(f"warning: the gate's speed table for the report failed: {type(e).__name__}: {e}", file=sys.stderr)
        return []
    return rows


def _train_step_rows(
    run_dir: Path, selection: Selection | None, ab: dict | None, label: str, first_dir: Path | None = None
) -> list[dict]:
    """The train_step rows of ``run_dir``'s comparison; ``first_dir``: ``run_dir`` is a confirmation
    run and this the first measurement, whose R the reproduction rule reads (as ``compare
    --first-measurement`` does), over the implementations and models the confirmation measured."""
    import pandas as pd

    from bench.judge.compare import GateConfig, _filter, _load, compare_frames, load_ab, load_pair

    if ab is not None:
        base, cur, _ = load_ab(str(run_dir))
        first = load_ab(str(first_dir))[:2] if first_dir is not None else None
        cfg, note = GateConfig(direct=True), None
    elif selection is not None:
        base, cur, sel = load_pair(str(selection.given), str(run_dir))
        first = (base, _load("first measurement", str(first_dir))) if first_dir is not None else None
        cfg, note = GateConfig(), sel.speed_note
    else:
        return []
    if first is not None:
        impls = sorted({str(i) for i in cur["speed"]["impl"].dropna()}) if "speed" in cur else None
        models = sorted({str(m) for m in cur["speed"]["model"].dropna()}) if "speed" in cur else None
        first = (_filter(first[0], impls, models), _filter(first[1], impls, models))
    table = compare_frames(base, cur, cfg, first, speed_note=note, ab=ab)["speed"]
    if table.empty:
        return []
    from bench.judge.speed import NOT_IN_BASELINE

    table = table[table["detail"] != NOT_IN_BASELINE]  # the report's table: the cases both sides have
    keep = ["impl", "model", "dtype", "batch_size", "ref", "base_ratio", "cur_ratio", "R", "ci_low", "ci_high",
            "verdict", "detail"]  # fmt: skip
    records = table[table["phase"] == "train_step"].reindex(columns=keep).to_dict("records")
    return [{k: (None if pd.isna(v) else v) for k, v in r.items()} | {"measurement": label} for r in records]
