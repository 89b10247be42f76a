"""A run's bookkeeping on disk: which case parts are done, and the records that belong to each.

A case part is ``(impl, model, dtype, part)``; ``part`` is one of ``bench.plan.profile.PARTS``,
``settings`` (per implementation and dtype: model ``None``), ``speed-p1``, ``speed-p2``, ... (the
further speed processes), or a run-level step (``availability`` of impl ``*``, ``peak-before`` and
``peak-after`` of impl ``numpy``). A worker appends a line to ``cases.jsonl`` as each part ends
(``mark_done``); ``--resume`` skips the parts marked done and drops the records of the others
(``drop_unfinished``), so an interrupted part re-runs whole, but for the accuracy seeds it finished
(each seed's records are written at once when it ends; the resumed part trains the others).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CASES_FILE = "cases.jsonl"
# record kind -> the part that writes it
KIND_PART = {
    "agreement": "agreement",
    "speed": "speed",
    "compile": "speed",
    "accuracy": "accuracy",
    "setting": "settings",
    "determinism": "speed",
}
RUN_LEVEL = ("availability", "peak", "bandwidth")  # record kinds of the run, not of a case


def speed_part(process: int) -> str:
    """The ``cases.jsonl`` part name of one speed process: ``speed``, ``speed-p1``, ..."""
    return "speed" if process == 0 else f"speed-p{process}"


def mark_done(run_dir: Path, impl: str, model: str | None, dtype: str | None, part: str, status: str) -> None:
    """Append (and fsync) one finished part to ``cases.jsonl``; ``status`` is ``ok`` or why not."""
    line = json.dumps({"impl": impl, "model": model, "dtype": dtype, "part": part, "status": status})
    with open(run_dir / CASES_FILE, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def done_parts(run_dir: Path) -> set[tuple[Any, ...]]:
    path = run_dir / CASES_FILE
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
        if part in RUN_LEVEL:
            return None
    elif kind in RUN_LEVEL:
        return None
    else:
        part = KIND_PART.get(kind)
        if kind in ("speed", "determinism") and rec.get("process"):
            part = speed_part(int(rec["process"]))
    if part == "settings":
        return (rec.get("impl"), None, rec.get("dtype"), "settings")
    return (rec.get("impl"), rec.get("model"), rec.get("dtype"), part)


def write_records_atomic(run_dir: Path, records: list[dict[str, Any]]) -> None:
    """Replace ``results.jsonl`` with ``records`` (a temporary file, fsync'ed, then renamed)."""
    from bench.measure.results import RESULTS_FILE

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
    from bench.measure.results import RESULTS_FILE, read_records

    if not (run_dir / RESULTS_FILE).is_file():
        return 0
    done = done_parts(run_dir)
    keep, dropped = [], 0
    for r in read_records(run_dir):
        key = record_part(r)
        # an accuracy seed's records are written whole when the seed ends: a resumed part keeps them
        if key is None or key in done or r.get("kind") == "accuracy":
            keep.append(r)
        else:
            dropped += 1
    write_records_atomic(run_dir, keep)
    return dropped


def validated_flag(records: list[dict[str, Any]], impl: str, model: str, dtype: str) -> bool | None:
    """Did the case's agreement pass (None: it did not run)? Handed to the speed and accuracy parts."""
    mine = [r for r in records if (r.get("impl"), r.get("model"), r.get("dtype")) == (impl, model, dtype)]
    if any(r["kind"] == "error" and r.get("phase") == "agreement" for r in mine):
        return False
    rows = [r for r in mine if r["kind"] == "agreement"]
    return all(r.get("ok") for r in rows) if rows else None
