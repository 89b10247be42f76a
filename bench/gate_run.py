"""``python -m bench run --gate BASELINE``: the regression gate after a run, with its confirmation.

The finished run is compared with the baseline (``bench.compare``). A failure that is speed only,
or a suspect (a train_step row past the decision point that its interval could not decide), is
re-measured before it counts: those implementations (and NumPy) on their models, in a second run
of fresh worker processes (``<run>-confirm/``), compared again with the first measurement beside
it; the gate follows that second comparison (``bench.compare`` docstring, rule 5). The one final
verdict is printed last, written to the run's ``gate.json`` and shown at the top of its report.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.baseline import Selection


def gate(ns: argparse.Namespace, run_dir: Path, rerun: Callable[[list[str]], int]) -> int:
    """Compare with the baseline; a speed-only failure, or a suspect, must reproduce in fresh
    worker processes before it fails the gate. ``rerun`` is the run command (``bench.run.main``),
    given the confirmation run's arguments."""
    from bench.compare import BadInput, select_baseline, speed_only_failures
    from bench.compare import main as compare_main

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
    for opt in ("threads", "data_dir", "timeout"):
        if getattr(ns, opt):
            confirm += [f"--{opt.replace('_', '-')}", str(getattr(ns, opt))]
    if rerun(confirm) != 0:
        return final_verdict(ns, run_dir, 1, None, selection)
    confirm_dir = run_dir.parent / f"{run_dir.name}-confirm" / "latest"
    rc = compare_main([ns.gate, str(confirm_dir), "--impls", ",".join(impls), "--models", ",".join(models),
                       "--first-measurement", str(run_dir), "--label", "confirmation"])  # fmt: skip
    print(f"confirmation run: {'regression reproduced' if rc else 'not reproduced (a slow process, not the code)'}; "
          "the first measurement's failing and suspect speed rows above were re-measured", flush=True)  # fmt: skip
    return final_verdict(ns, run_dir, rc, confirm_dir.resolve(), selection)


def final_verdict(
    ns: argparse.Namespace, run_dir: Path, rc: int, confirm_dir: Path | None, selection: Selection | None = None
) -> int:
    """The one final line of the gate, also written to the run's ``gate.json`` and summary."""
    from bench.report import GATE_FILE

    verdict = {0: "PASS", 1: "FAIL"}.get(rc, f"ERROR (exit {rc})")
    baseline = str(selection.path) if selection else str(ns.gate)
    info = {"verdict": verdict, "baseline": baseline, "confirmation": confirm_dir is not None,
            "confirm_dir": str(confirm_dir) if confirm_dir else None,
            "machine_kind": selection.current_kind if selection else None,
            "baseline_kind": selection.kind if selection else None,
            "speed_not_gated": selection.speed_note if selection else None}  # fmt: skip
    (run_dir / GATE_FILE).write_text(json.dumps(info, indent=1) + "\n", encoding="utf-8")
    if not ns.no_report:
        try:
            from bench.report import write_report

            write_report(run_dir)
        except Exception as e:  # the verdict stands without its report
            print(f"warning: report failed: {type(e).__name__}: {e}", file=sys.stderr)
    how = "after re-measuring the speed failures and suspects" if confirm_dir else "no confirmation needed"
    if selection and selection.speed_note:
        how += "; SPEED NOT GATED: no baseline of this machine kind"
    print(f"\nRESULT: {verdict} (regression gate against {baseline}; {how})", flush=True)
    return rc
