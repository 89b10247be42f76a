"""Reports of one benchmark run: Parquet/CSV, a Markdown summary and one self-contained HTML page.

``write_report(run_dir)`` writes into the run directory:

- ``results.parquet`` and ``results.csv``: all kinds in ONE long table (column ``kind``
  says which; columns a kind does not have are empty). ``samples_s`` stays a list column
  in Parquet and is JSON text in CSV; object columns of mixed type (``setting.value``) are
  stored as JSON text in both.
- ``summary.md``: environment, availability (skips with their reason), agreement, speed,
  compile times, accuracy, errors.
- ``report.html``: the same tables plus matplotlib figures embedded as base64 PNG; no
  external assets.

The run is read by ``bench.measure.frames.load_run`` (one tidy frame per record kind, run.json's
``env.<key>`` and ``run.<key>`` columns on every row); the tables are ``bench.report.tables``,
the figures ``bench.report.figures``, the cell and table formatting ``bench.report.render``. Partial runs (some
kinds missing) and skipped implementations are fine: missing sections say so.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import pandas as pd

from bench.measure.frames import load_run, read_run_meta, resolve_run_dir, run_meta
from bench.measure.results import COMMON
from bench.plan.sides import tree_label
from bench.report import page
from bench.report.figures import FIGURE_NOTES, FIGURES
from bench.report.headline import (
    headline_markdown,
    headline_tables,
    stability_lines,
    time_to_accuracy_lines,
    usable_cores,
)
from bench.report.render import cell, markdown_table
from bench.report.tables import build_sections

GATE_FILE = "gate.json"  # the regression gate's verdict, when run --gate ran it
OUTPUT_FILES = ("results.parquet", "results.csv", "summary.md", "report.html")


def injection_lines(injected: str | None) -> list[str]:
    """A run made slower on purpose (``bench/measure/inject.py``) says so before anything else."""
    if not injected:
        return []
    return [f"**Injected slowdown (gate validation, not a measurement): `{injected}`.**", ""]


def gate_lines(gate: dict[str, Any] | None, meta: dict[str, Any] | None = None) -> list[str]:
    """The regression gate's verdict (``gate.json``, written by ``run --gate``), when it ran; for
    an A/B run (``--gate-ref``), which two trees were compared."""
    ab = (meta or {}).get("gate_ref")
    both = []
    if ab:
        why = f" ({ab['why']})" if ab.get("why") else ""
        both = [f"**A/B run**: A = {tree_label((meta or {}).get('tree'))}; B = REF `{ab.get('rev')}` = "
                f"`{str(ab.get('commit'))[:10]}`{why}. Side B's cases are named `<impl>@ref`.", ""]  # fmt: skip
    if not gate:
        return both
    confirm = (
        f"; a confirmation run re-measured the speed failures ({gate.get('confirm_dir')})"
        if gate.get("confirmation")
        else "; no confirmation run was needed"
    )
    lines = [f"**Regression gate: {gate.get('verdict')}** against `{gate.get('baseline')}`{confirm}."]
    if gate.get("speed_not_gated"):
        lines += ["", f"**{gate['speed_not_gated']}**"]
    return [*both, *lines, ""]


def gate_speed_table(gate: dict[str, Any] | None) -> pd.DataFrame | None:
    """The gate's train_step rows (``gate.json``'s ``speed_rows``) for the headline: per implementation
    and model, both sides' samples/s (an A/B run) or in-run ratios (a stored baseline), R with its
    99 % interval (R > 1: the working tree / current run is slower) and the verdict."""
    rows = (gate or {}).get("speed_rows") or []
    if not rows:
        return None
    ab = bool(gate.get("ab"))
    out = []
    for r in rows:
        b = r.get("batch_size")
        row = {"impl": r["impl"], "model": "all (geometric mean)" if r["model"] == "ALL" else r["model"],
               "batch": "" if b is None else int(b)}  # fmt: skip
        if ab:
            row["A samples/s"] = _rate(b, r.get("cur_ratio"))
            row["B (REF) samples/s"] = _rate(b, r.get("base_ratio"))
            row["B/A"] = _fmt3(r.get("R"))
        else:
            row["current / numpy"] = _fmt3(r.get("cur_ratio"))
            row["baseline / numpy"] = _fmt3(r.get("base_ratio"))
            row["R"] = _fmt3(r.get("R"))
        row["99% interval"] = f"[{_fmt3(r.get('ci_low'))}, {_fmt3(r.get('ci_high'))}]"
        row["verdict"] = str(r.get("verdict") or "") + (
            " (confirmation)" if r.get("measurement") == "confirmation" else ""
        )
        out.append(row)
    return pd.DataFrame(out)


def _rate(batch: Any, seconds: Any) -> str:
    return f"{batch / seconds:,.0f}" if batch and seconds else ""


def _fmt3(v: Any) -> str:
    return "" if v is None else f"{v:.3f}"


GATE_TITLE = "Regression gate: train_step, R > 1 is slower"


def render_markdown(
    frames: dict[str, pd.DataFrame],
    run_id: str,
    gate: dict[str, Any] | None = None,
    injected: str | None = None,
    meta: dict[str, Any] | None = None,
) -> str:
    head = [f"# nnbench run `{run_id}`", "", *injection_lines(injected), *gate_lines(gate, meta)]
    verdicts = gate_speed_table(gate)
    if verdicts is not None:
        head += [f"### {GATE_TITLE}", "", markdown_table(verdicts), ""]
    out = [*head, *headline_markdown(frames, markdown_table)]
    for s in build_sections(frames):
        out += [f"## {s.title}", ""]
        if s.text:
            out += [s.text, ""]
        out += [markdown_table(s.table) if s.table is not None and len(s.table) else "_No records of this kind._", ""]
    return "\n".join(out)


def smoke_note(frames: dict[str, pd.DataFrame]) -> str:
    """What a short run's accuracy is: a smoke test of training, not the recipe's result."""
    acc = frames.get("accuracy")
    if acc is None or acc.empty:
        return ""
    epochs = pd.to_numeric(acc["epoch"], errors="coerce").max()
    if pd.isna(epochs) or epochs > 2:
        return ""
    n = int(epochs)
    return (f"Accuracy after {n} epoch{'s' if n > 1 else ''}: a smoke test that training runs and learns, not the "
            "recipe's accuracy (see the full profile's or the learning report).")  # fmt: skip


def run_facts(frames: dict[str, pd.DataFrame]) -> str:
    """Profile, machine and threads: what the figures below were measured on."""
    meta = run_meta(frames)
    bits = [f"profile {meta.get('profile.name') or meta.get('profile') or '?'}"]
    bits += [f"{meta.get('env.cpu_model') or '?'} ({meta.get('env.cpu_cores_usable') or '?'} usable cores)"]
    bits += [f"{meta.get('run.threads') or meta.get('threads') or '?'} thread(s) per case"]
    if meta.get("env.gpu") and str(meta["env.gpu"]).lower() != "none":
        bits.append(f"GPU {meta['env.gpu']}")
    return "; ".join(str(b) for b in bits)


def headline_blocks(frames: dict[str, pd.DataFrame]) -> list[page.Block]:
    """The headline (``bench.report.headline``): a table per model at the spec's batch size."""
    cores = usable_cores(frames)
    note = page.para(
        "train_step at the spec's batch size, at the threads named above; "
        "x vs numpy: per-sample throughput against NumPy in this run; % GEMM peak: against this run's "
        "measured float GEMM rate; x of limit: the roofline's bound (model FLOPs at that rate, or the phase's "
        "compulsory bytes at the measured bandwidth of the memory level it fits in, whichever is longer) over "
        "the time, 1 = at the machine's limit. " + smoke_note(frames)
    )
    blocks = [page.Block("Headline", note)]
    for title, t in headline_tables(frames, cores).items():
        blocks.append(page.Block(f"Headline: {title}", page.table(t), level=3))
    lines = time_to_accuracy_lines(frames)
    if lines:
        blocks.append(page.Block("Time to accuracy", page.bullets(lines), level=3))
    return blocks


def render_html(
    frames: dict[str, pd.DataFrame],
    run_id: str,
    gate: dict[str, Any] | None = None,
    injected: str | None = None,
    meta: dict[str, Any] | None = None,
) -> str:
    """The run's page: the verdicts first (gate, stability), the headline, figures, then every
    section; long tables folded."""
    top = [*injection_lines(injected), *gate_lines(gate, meta)]
    cores = usable_cores(frames)
    plain = [line.replace("**", "").replace("`", "") for line in top if line]
    lead = [page.verdict_html(x) if x.startswith("Regression gate") else page.para(x, "") for x in plain]
    stability = stability_lines(frames, cores)  # the verdict, then "- reason" lines when unstable
    lead += [page.verdict_html(stability[0].replace("**", ""))]
    reasons = [f"<li>{html.escape(r[2:])}</li>" for r in stability[2:]]
    lead += [f"<ul>{''.join(reasons)}</ul>" if reasons else "", page.para(run_facts(frames), "")]
    blocks: list[page.Block] = []
    verdicts = gate_speed_table(gate)
    if verdicts is not None:
        blocks.append(page.Block(GATE_TITLE, page.table(verdicts)))
    blocks += headline_blocks(frames)
    blocks.append(page.Block("Figures", page.para("One colour per backend, the same in every table and figure.")))
    for title, fn in FIGURES:
        try:
            body = page.figure(fn(frames), title, FIGURE_NOTES.get(title, ""))
        except Exception as e:  # a figure that cannot be drawn must not lose the report
            body = page.para(f"figure failed: {type(e).__name__}: {e}")
        blocks.append(page.Block(title, body, level=3))
    for s in build_sections(frames):
        text = s.text + (" " + smoke_note(frames) if s.title.startswith(("Accuracy", "Test accuracy")) else "")
        blocks.append(page.Block(s.title, page.para(text.strip()) + page.table(s.table)))
    return page.page(f"nnbench run {run_id}", "\n".join(x for x in lead if x), blocks)


def combined_frame(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """All kinds in one long table; mixed-type object columns as JSON text."""
    parts = [df for df in frames.values() if len(df)]
    if not parts:
        return pd.DataFrame(columns=list(COMMON))
    df = pd.concat(parts, ignore_index=True, sort=False)
    for c in df.columns:
        if df[c].dtype != object:
            continue
        types = {type(v) for v in df[c] if cell(v) is not None}
        if len(types) > 1 or (types and not types <= {str, list, bool}):
            df[c] = df[c].map(lambda v: None if cell(v) is None else json.dumps(v, default=str))
    return df


def write_report(run_dir: str | Path) -> Path:
    """Write the report files (``OUTPUT_FILES``) into the run dir; returns the HTML path."""
    rd = resolve_run_dir(run_dir)
    frames = load_run(rd)
    meta = read_run_meta(rd)
    run_id, injected = str(meta.get("run_id") or rd.name), meta.get("injected_slowdown")
    flat = combined_frame(frames)
    flat.to_parquet(rd / "results.parquet", index=False)
    csv = flat.copy()
    if "samples_s" in csv.columns:
        csv["samples_s"] = csv["samples_s"].map(lambda v: json.dumps(v) if isinstance(v, list) else v)
    csv.to_csv(rd / "results.csv", index=False)
    gate_file = rd / GATE_FILE
    gate = json.loads(gate_file.read_text(encoding="utf-8")) if gate_file.is_file() else None
    (rd / "summary.md").write_text(render_markdown(frames, run_id, gate, injected, meta), encoding="utf-8")
    out = rd / "report.html"
    out.write_text(render_html(frames, run_id, gate, injected, meta), encoding="utf-8")
    return out
