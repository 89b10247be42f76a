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

from bench.measure.frames import load_run, read_run_meta, resolve_run_dir
from bench.measure.results import COMMON
from bench.plan.sides import tree_label
from bench.report.figures import FIGURES
from bench.report.headline import headline_markdown, headline_tables, stability_lines, usable_cores
from bench.report.render import CSS, cell, html_table, markdown_table
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


def headline_html(frames: dict[str, pd.DataFrame]) -> list[str]:
    """The headline block (``bench.report.headline``) as HTML: stability verdict, a table per model."""
    cores = usable_cores(frames)
    parts = ["<h2>Headline</h2>"]
    for line in stability_lines(frames, cores):
        if line:
            text = html.escape(line.lstrip("- ")).replace("**", "")
            parts.append(f"<p class='note'><b>{text}</b></p>" if line.startswith("**") else f"<p>{text}</p>")
    for title, t in headline_tables(frames, cores).items():
        parts.append(f"<h3>{html.escape(title)}</h3>{html_table(t)}")
    return parts


def render_html(
    frames: dict[str, pd.DataFrame],
    run_id: str,
    gate: dict[str, Any] | None = None,
    injected: str | None = None,
    meta: dict[str, Any] | None = None,
) -> str:
    top = [*injection_lines(injected), *gate_lines(gate, meta)]
    verdicts = gate_speed_table(gate)
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>nnbench {html.escape(run_id)}</title><style>{CSS}</style></head><body>",
        f"<h1>nnbench run {html.escape(run_id)}</h1>",
        *(f"<p><b>{html.escape(line.replace('**', '').replace('`', ''))}</b></p>" for line in top if line),
        *([f"<h3>{GATE_TITLE}</h3>{html_table(verdicts)}"] if verdicts is not None else []),
        *headline_html(frames),
        "<h2>Figures</h2>",
    ]
    for title, fn in FIGURES:
        try:
            uri = fn(frames)
        except Exception as e:  # a figure that cannot be drawn must not lose the report
            parts.append(f"<h3>{html.escape(title)}</h3><p class='note'>figure failed: {html.escape(repr(e))}</p>")
            continue
        body = f"<img alt='{html.escape(title)}' src='{uri}'>" if uri else "<p class='note'>No data.</p>"
        parts.append(f"<h3>{html.escape(title)}</h3>{body}")
    for s in build_sections(frames):
        parts.append(f"<h2>{html.escape(s.title)}</h2>")
        if s.text:
            parts.append(f"<p class='note'>{html.escape(s.text)}</p>")
        has = s.table is not None and len(s.table)
        parts.append(html_table(s.table) if has else "<p class='note'>No records of this kind.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


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
