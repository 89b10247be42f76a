"""``python -m bench history RUNS... --out DIR``: speed across runs, one series per machine.

Each argument is a run directory or a folder holding run directories (searched recursively:
a folder of CI artifacts). Every run is read with ``bench.measure.frames.load_run`` (pandas); the git
commit, start date and machine come from its ``run.json``.

- Per case (impl, model, dtype, phase, batch size) and run: the in-run ratio
  ``median(t_impl) / median(t_ref)``, with ``t_ref`` numpy's same case, or the in-run
  float32 GEMM for numpy itself and for a case numpy did not measure: the gate's ratio
  (``bench.judge.compare``), which cancels the machine's speed and load. Lower is faster.
- A series is one machine kind and profile: the run.json keys ``SERIES_KEYS`` (CPU model,
  usable cores, GPU, threads, profile; ``--series-by`` to change). Runs of different series are never joined
  into one line, and are never compared with each other.
- Step changes: consecutive runs of one series are compared with the gate's own statistic
  (``bench.judge.speed.check_speed``: bootstrap CI of the ratio of ratios, same thresholds); a
  case it fails is a regression step, one it calls faster beyond noise an improvement.

Writes ``history.html`` (figure, step changes, every figure in a table), ``history.md``
(the summary) and ``history.png`` (the figure) into ``--out``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import pandas as pd

from bench.judge import speed
from bench.measure.frames import RunDirError, flatten, load_run, read_run_meta, resolve_run_dir, run_meta
from bench.measure.results import RESULTS_FILE, RUN_FILE, SchemaError
from bench.report import page, render
from bench.report.figures import plain_ticks

SERIES_KEYS = ("env.cpu_model", "env.cpu_cores_usable", "env.gpu", "threads", "profile.name")
CASE = ["impl", "model", "dtype", "phase", "batch_size"]
OUTPUT_FILES = ("history.html", "history.md", "history.png")
GATE = speed.GateConfig()  # the regression gate's defaults


# ----------------------------------------------------------------------------- loading


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run directories named or found (recursively) under the given folders; each once: the
    same folder reached twice, or a copy of a run (an artifact's ``latest`` stored as a
    folder) with the same run id and start time, counts once."""
    found: dict[Any, Path] = {}
    for p in map(Path, paths):
        if (p / RESULTS_FILE).is_file() or p.is_file():
            candidates = [resolve_run_dir(p)]
        elif p.is_dir():
            candidates = sorted(r.parent for r in p.rglob(RESULTS_FILE) if (r.parent / RUN_FILE).is_file())
        else:
            raise RunDirError(f"no run directory or folder at {p}")
        for c in candidates:
            meta = read_run_meta(c)
            key = (meta["run_id"], meta.get("started")) if meta.get("run_id") else c.resolve()
            found.setdefault(key, c)
    if not found:
        raise RunDirError(f"no run directories (with {RESULTS_FILE} and {RUN_FILE}) under {', '.join(map(str, paths))}")
    return list(found.values())


def series_label(meta: dict[str, Any], keys: tuple[str, ...]) -> str:
    """``AMD EPYC, 2 cores, gpu none, 2 threads, quick``: the run's series, from its run.json."""
    unit = {
        "env.cpu_cores_usable": "{} cores",
        "env.cpu_cores": "{} cores",
        "env.gpu": "gpu {}",
        "threads": "{} threads",
    }
    return ", ".join(unit.get(k, "{}").format(render.fmt(meta.get(k))) for k in keys)


def run_row(run_dir: Path, frames: dict[str, pd.DataFrame], keys: tuple[str, ...]) -> dict[str, Any]:
    meta = run_meta(frames) or flatten(read_run_meta(run_dir))
    commit = str(meta.get("env.git_commit") or "unknown")
    return {
        "run_id": str(meta.get("run_id") or run_dir.name),
        "started": pd.to_datetime(meta.get("started"), utc=True, errors="coerce"),
        "commit": commit[:10] + ("+dirty" if commit.endswith("+dirty") else ""),
        "series": series_label(meta, keys),
        "profile": meta.get("profile.name"),
        "threads": meta.get("threads"),
        "path": str(run_dir),
    }


def case_ratios(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per speed case of a run: median, samples/s, reference and the in-run ratio."""
    sets = speed._sample_sets(frames)
    rows = []
    for key, a in sets.items():
        if key[0] == speed.PEAK_REF:
            continue
        impl, model, dtype, phase, batch = key
        same = (speed.REFERENCE, model, dtype, phase, batch)
        ref_key = same if impl != speed.REFERENCE and same in sets else (speed.PEAK_REF, dtype)
        ref = speed.REFERENCE if ref_key == same else speed.PEAK_REF
        t = speed.center(a)  # a: one array of rounds per worker process; the gate's own figure
        ratio = t / speed.center(sets[ref_key]) if ref_key in sets else math.nan
        rows.append(dict(zip(CASE, key, strict=True)) | {"median_ms": t * 1e3, "samples_per_s": batch / t})
        rows[-1] |= {"rounds": sum(len(p) for p in a), "ref": ref, "ratio": ratio}
    return pd.DataFrame(rows, columns=CASE + ["median_ms", "samples_per_s", "rounds", "ref", "ratio"])


def load_history(
    paths: list[str | Path], keys: tuple[str, ...] = SERIES_KEYS, cfg: speed.GateConfig = GATE
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs: one row per run in date order, with ``x`` its position; points: one row per run
    and case, with the step-change columns of the comparison with the series' previous run)."""
    loaded = [(rd, load_run(rd)) for rd in find_runs(paths)]
    runs = pd.DataFrame([run_row(rd, fr, keys) for rd, fr in loaded])
    runs["frames"] = [fr for _, fr in loaded]
    runs = runs.sort_values(["started", "run_id"], kind="stable").reset_index(drop=True)
    runs["x"] = range(len(runs))
    points = []
    for _, s in runs.groupby("series", sort=False):
        prev = None
        for _, run in s.iterrows():
            p = case_ratios(run["frames"]).assign(x=run["x"])
            if prev is not None:
                p = p.merge(steps_between(prev["frames"], run["frames"], cfg), how="left", on=CASE)
                p["prev_run_id"] = prev["run_id"]
            points.append(p)
            prev = run
    pts = pd.concat(points, ignore_index=True) if points else pd.DataFrame(columns=CASE + ["x"])
    for c in ("R", "ci_low", "ci_high", "verdict", "prev_run_id"):
        if c not in pts.columns:
            pts[c] = None
    meta_cols = ["run_id", "x", "started", "commit", "series"]
    pts = pts.merge(runs[meta_cols], on="x", how="left")  # x: run ids of copied runs may repeat
    pts["step"] = pts["verdict"].map({speed.FAIL: "regression", speed.NOTE: "improvement"})
    return runs.drop(columns="frames"), pts.sort_values(["x"] + CASE, kind="stable").reset_index(drop=True)


def steps_between(base: dict[str, pd.DataFrame], cur: dict[str, pd.DataFrame], cfg: speed.GateConfig) -> pd.DataFrame:
    """The gate's speed rows for two runs of one series, per case (the aggregate rows dropped)."""
    sp = speed.check_speed(base, cur, cfg)
    cols = CASE + ["R", "ci_low", "ci_high", "verdict"]
    if sp.empty or "R" not in sp.columns:
        return pd.DataFrame(columns=cols)
    sp = sp[(sp["model"] != "ALL") & sp["R"].notna()]
    return sp[cols]


# ----------------------------------------------------------------------------- figure


def fig_history(runs: pd.DataFrame, points: pd.DataFrame) -> Any:
    """One panel per (model, phase): each (impl, series) line is its ratio to the in-run
    reference against the run (commit, date); regressions red triangles, improvements green."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = list(points.groupby(["model", "phase"], sort=True).groups) if len(points) else []
    ncol = min(3, max(len(panels), 1))
    nrow = max(math.ceil(len(panels) / ncol), 1)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 3.6 * nrow + 0.6), squeeze=False)
    impls = sorted(points["impl"].unique()) if len(points) else []
    colors = {impl: page.colour(impl) for impl in impls}
    series = list(dict.fromkeys(runs["series"]))
    styles = ["-", "--", ":", "-."]
    markers = ["o", "s", "D", "^", "v", "P"]
    several_batches = points.groupby(["model", "phase"])["batch_size"].nunique().max() > 1 if len(points) else False
    for ax, (model, phase) in zip(axes.flat, panels, strict=False):
        d = points[(points["model"] == model) & (points["phase"] == phase)]
        for (impl, _dtype, batch, ser), line in d.groupby(["impl", "dtype", "batch_size", "series"], sort=True):
            si = series.index(ser)
            label = f"{impl} / {line['ref'].iloc[0]}" + (f" b={batch}" if several_batches else "")
            label += f" [{si + 1}]" if len(series) > 1 else ""
            ax.plot(line["x"], line["ratio"], styles[si % 4], marker=markers[si % 6], color=colors[impl], label=label)
            for step, mk, col in (("regression", "^", "red"), ("improvement", "v", "green")):
                s = line[line["step"] == step]
                ax.scatter(s["x"], s["ratio"], s=120, marker=mk, facecolors="none", edgecolors=col, linewidths=2)
        ax.set_yscale("log")
        plain_ticks(ax, "y", "x")
        ax.set_title(f"{model}: {phase}", fontsize=10)
        ax.set_ylabel("time / in-run reference")
        ax.set_xticks(list(runs["x"]))
        ax.set_xticklabels([_xlabel(r) for _, r in runs.iterrows()], fontsize=7, rotation=30, ha="right")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if len(series) > 1:
        fig.suptitle("  ".join(f"[{i + 1}] {s}" for i, s in enumerate(series)), fontsize=8)
    fig.tight_layout()
    return fig


def _xlabel(run: pd.Series) -> str:
    date = run["started"].strftime("%m-%d %H:%M") if pd.notna(run["started"]) else "?"
    return f"{run['commit'][:7]}\n{date}"


# ----------------------------------------------------------------------------- tables and pages


def runs_table(runs: pd.DataFrame) -> pd.DataFrame:
    t = runs[["x", "run_id", "started", "commit", "series", "profile", "path"]].copy()
    t["started"] = t["started"].map(lambda v: v.strftime("%Y-%m-%d %H:%M") if pd.notna(v) else "")
    return t.rename(columns={"x": "#"})


def steps_table(points: pd.DataFrame) -> pd.DataFrame:
    s = points[points["step"].notna()]
    cols = ["series", "prev_run_id", "run_id", "commit"] + CASE + ["ref", "R", "ci_low", "ci_high", "step"]
    return s[cols].reset_index(drop=True)


def ratio_pivot(points: pd.DataFrame) -> pd.DataFrame:
    """Rows (model, phase, impl, series), one column per run (``#x commit``): the ratio."""
    p = points.assign(run=points["x"].map(lambda x: f"#{x}") + " " + points["commit"].str[:7])
    t = p.pivot_table(index=["model", "phase", "impl", "batch_size", "series"], columns="run", values="ratio")
    order = sorted(t.columns, key=lambda c: int(c.split()[0][1:]))
    return t[order].reset_index()


def points_table(points: pd.DataFrame) -> pd.DataFrame:
    cols = ["x", "run_id", "commit", "series"] + CASE + ["median_ms", "samples_per_s", "rounds", "ref", "ratio"]
    t = points[cols + ["R", "ci_low", "ci_high", "step"]].rename(columns={"x": "#"})
    return t.assign(samples_per_s=t["samples_per_s"].round().astype("Int64"))


NOTE = (
    "ratio: median time of the case / median time of its in-run reference (numpy's same case; the "
    "in-run float32 GEMM for numpy itself); lower is faster. Step changes: consecutive runs of one "
    "machine compared with the regression gate's statistic (bench/judge/compare.py): R = ratio now / "
    "ratio before, with its bootstrap CI; a regression when CI low > the gate's threshold, an "
    "improvement when CI high < 1/threshold. Runs of different machines are separate series."
)


def render_markdown(runs: pd.DataFrame, points: pd.DataFrame, png: str) -> str:
    steps = steps_table(points)
    n_series = runs["series"].nunique()
    out = [
        f"# nnbench history: {len(runs)} runs, {n_series} series (machine kind, threads, profile)",
        "",
        f"![history]({png})",
        "",
        NOTE,
        "",
    ]
    out += ["## Runs", "", render.markdown_table(runs_table(runs).drop(columns="path")), ""]
    out += ["## Step changes", ""]
    out += [render.markdown_table(steps) if len(steps) else "_None: no case changed beyond the gate's noise band._", ""]
    out += ["## Ratio to the in-run reference, per run", ""]
    out += [render.markdown_table(ratio_pivot(points)) if len(points) else "_No speed records._", ""]
    return "\n".join(out)


def render_html(runs: pd.DataFrame, points: pd.DataFrame, png_uri: str) -> str:
    steps = steps_table(points)
    n_reg = int((steps["step"] == "regression").sum()) if len(steps) else 0
    n_imp = int((steps["step"] == "improvement").sum()) if len(steps) else 0
    verdict = f"{n_reg} regression step(s), {n_imp} improvement step(s) over {len(runs)} runs"
    if not len(steps):
        verdict = f"No step change over {len(runs)} runs: no case moved beyond the gate's noise band"
    lead = page.verdict_html(("FAIL: " if n_reg else "PASS: ") + verdict) + page.para(NOTE, "note")
    blocks = [
        page.Block(
            "Ratio to the in-run reference, per run",
            page.figure(
                png_uri,
                "ratio per run",
                "Lower is faster; red triangle up: a regression step, green triangle down: an improvement.",
            ),
        ),  # fmt: skip
        page.Block("Step changes", page.table(steps, empty="None.")),
        page.Block("Runs", page.table(runs_table(runs).drop(columns="path"), what="runs")),
        page.Block("Every figure", page.table(points_table(points), what="figures", empty="No speed records.")),
    ]
    return page.page(f"nnbench history: {len(runs)} runs, {runs['series'].nunique()} series", lead, blocks)


def write_history(
    paths: list[str | Path],
    out: str | Path,
    keys: tuple[str, ...] = SERIES_KEYS,
    cfg: speed.GateConfig = GATE,
) -> Path:
    """Write ``OUTPUT_FILES`` into ``out``; returns the HTML path."""
    runs, points = load_history(paths, keys, cfg)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fig = fig_history(runs, points)
    fig.savefig(out / "history.png", dpi=80)
    uri = render.png_uri(fig)
    (out / "history.md").write_text(render_markdown(runs, points, "history.png"), encoding="utf-8")
    (out / "history.html").write_text(render_html(runs, points, uri), encoding="utf-8")
    return out / "history.html"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench history", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run directories, or folders holding them (searched recursively)")
    ap.add_argument("--out", required=True, help="folder for history.html, history.md, history.png")
    keys = ",".join(SERIES_KEYS)
    ap.add_argument("--series-by", default=keys, help=f"run.json keys naming a series (default: {keys})")
    ns = ap.parse_args(argv)
    keys = tuple(k.strip() for k in ns.series_by.split(",") if k.strip())
    try:
        page = write_history(ns.runs, ns.out, keys)
    except (RunDirError, SchemaError) as e:
        print(f"error: {e}")
        return 2
    print(f"wrote {', '.join(OUTPUT_FILES)} in {page.parent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
