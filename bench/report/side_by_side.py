"""``python -m bench report RUN_A RUN_B [...] --out DIR``: runs (machines, settings) side by side.

Every run is read with ``bench.measure.frames.load_run`` (pandas). On top, what differs between the
runs: run.json keys (CPU, cores, GPU, threads, BLAS, library versions, profile, ...) and the
implementations' own settings records (thread pools, oneDNN, device...). Then one table per
model: per (dtype, phase, batch size, implementation), each run's samples/s and in-run
speedup against numpy, and each run's samples/s over the first run's (the machines' or
settings' ratio, absolute speed: it is only meaningful because the runs differ on purpose).

Writes ``side_by_side.html`` (with a figure), ``side_by_side.md`` and ``side_by_side.png``.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import pandas as pd

from bench.measure.frames import load_run, resolve_run_dir, run_meta
from bench.report import page, render
from bench.report.tables import speed_table

OUTPUT_FILES = ("side_by_side.html", "side_by_side.md", "side_by_side.png")
# run.json keys that differ between any two runs and say nothing about the machine or settings
NOT_DIFFERENCES = ("run_id", "started", "finished", "argv", "env.python_executable", "schema_version")
BULKY = ("profile.", "specs.", "registry.")
KEYS = ["dtype", "phase", "batch_size", "impl"]


def labels(n: int) -> list[str]:
    return list(string.ascii_uppercase[:n]) if n <= 26 else [f"R{i + 1}" for i in range(n)]


def run_settings(frames: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """run.json flattened (profile and specs reduced to the profile's name), plus every
    implementation's ``setting`` records as ``setting.<impl>.<key>``."""
    meta = {k: v for k, v in run_meta(frames).items() if not k.startswith(BULKY) or k == "profile.name"}
    st = frames.get("setting")
    if st is not None and len(st):
        for r in st.drop_duplicates(["impl", "key"], keep="last").itertuples(index=False):
            meta[f"setting.{r.impl}.{r.key}"] = r.value
    return meta


def env_differences(settings: list[dict[str, Any]], names: list[str]) -> pd.DataFrame:
    """One row per key whose value is not the same in every run (missing counts as a value)."""
    keys = sorted({k for s in settings for k in s} - set(NOT_DIFFERENCES))
    rows = []
    for k in keys:
        vals = [render.fmt(render.cell(s.get(k))) for s in settings]
        if len(set(vals)) > 1:
            rows.append({"key": k} | dict(zip(names, vals, strict=True)))
    return pd.DataFrame(rows, columns=["key", *names])


def speed_side_by_side(all_frames: list[dict[str, pd.DataFrame]], names: list[str]) -> dict[str, pd.DataFrame]:
    """``{model: table}``: per (dtype, phase, batch, impl) each run's samples/s and x numpy,
    then each later run's samples/s over the first's."""
    parts = []
    for name, frames in zip(names, all_frames, strict=True):
        t = speed_table(frames)
        if t is not None:
            parts.append(t.assign(run=name))
    if not parts:
        return {}
    long = pd.concat(parts, ignore_index=True)
    out = {}
    for model, d in long.groupby("model", sort=False):
        sps = d.pivot_table(index=KEYS, columns="run", values="samples_per_s", aggfunc="last")
        vs = d.pivot_table(index=KEYS, columns="run", values="speedup_vs_numpy", aggfunc="last")
        cols: dict[str, pd.Series] = {}
        for n in names:
            if n in sps.columns:
                cols[f"{n} samples/s"] = sps[n].round().astype("Int64")
            if n in vs.columns:
                cols[f"{n} x numpy"] = vs[n]
        first = names[0]
        for n in names[1:]:
            if n in sps.columns and first in sps.columns:
                cols[f"{n}/{first} samples/s"] = (sps[n] / sps[first]).round(3)
        t = pd.DataFrame(cols).reset_index()
        out[str(model)] = render.sort_rows(t, KEYS, render.impl_order({"speed": long})).reset_index(drop=True)
    return out


def runs_table(run_dirs: list[Path], all_frames: list[dict[str, pd.DataFrame]], names: list[str]) -> pd.DataFrame:
    rows = []
    for name, rd, frames in zip(names, run_dirs, all_frames, strict=True):
        meta = run_meta(frames)
        rows.append(
            {"run": name, "run_id": meta.get("run_id", rd.name), "started": meta.get("started")}
            | {"cpu": meta.get("env.cpu_model"), "threads": meta.get("threads"), "gpu": meta.get("env.gpu")}
            | {"commit": str(meta.get("env.git_commit", ""))[:10], "path": str(rd)}
        )
    return pd.DataFrame(rows)


def fig_side_by_side(tables: dict[str, pd.DataFrame], runs: pd.DataFrame) -> Any:
    """Per model: train_step (else the last phase) samples/s at the largest batch, one bar per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    names = list(runs["run"])
    legend = [f"{r.run}: {r.cpu}, {r.threads} threads, gpu {r.gpu}" for r in runs.itertuples(index=False)]
    fig, axes = plt.subplots(1, max(len(tables), 1), figsize=(5.5 * max(len(tables), 1), 3.8), squeeze=False)
    for ax, (model, t) in zip(axes[0], tables.items(), strict=False):
        phase = "train_step" if (t["phase"] == "train_step").any() else t["phase"].iloc[-1]
        d = t[t["phase"] == phase]
        d = d[d["batch_size"] == d["batch_size"].max()]
        x = np.arange(len(d))
        width = 0.8 / len(names)
        for i, n in enumerate(names):
            if f"{n} samples/s" in d.columns:
                ax.bar(
                    x + i * width,
                    d[f"{n} samples/s"].astype(float),
                    width,
                    label=legend[i],
                    color=[page.colour(str(m)) for m in d["impl"]],
                    alpha=1.0 - 0.5 * i / max(len(names) - 1, 1),
                    edgecolor="k",
                    lw=0.5,
                    hatch=["", "//", "..", "xx"][i % 4],
                )
        ax.set_xticks(x + width * (len(names) - 1) / 2)
        ax.set_xticklabels(d["impl"].astype(str), rotation=30)
        ax.set_ylim(bottom=0)
        ax.set_ylabel("samples/s")
        ax.set_title(f"{model}: {phase}, batch {int(d['batch_size'].iloc[0])}" if len(d) else model)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


NOTE = (
    "samples/s: batch size / median time per call. x numpy: the in-run speedup against numpy "
    "(same run, same case). B/A samples/s: run B's throughput over run A's."
)


def render_markdown(runs: pd.DataFrame, diff: pd.DataFrame, tables: dict[str, pd.DataFrame], png: str) -> str:
    out = [f"# nnbench: {len(runs)} runs side by side", "", render.markdown_table(runs.drop(columns="path")), ""]
    out += ["## What differs", ""]
    out += [render.markdown_table(diff) if len(diff) else "_Nothing: same machine and settings._", ""]
    out += [f"![samples/s per run]({png})", "", NOTE, ""]
    for model, t in tables.items():
        out += [f"## {model}", "", render.markdown_table(t), ""]
    return "\n".join(out)


def verdict(tables: dict[str, pd.DataFrame], names: list[str]) -> str:
    """Each later run's train_step throughput over the first's: geometric mean and range over the
    cases both ran. A description, not a gate (``python -m bench compare`` judges with noise)."""
    import numpy as np

    out = []
    for n in names[1:]:
        col = f"{n}/{names[0]} samples/s"
        r = pd.concat([t.loc[t["phase"] == "train_step", col] for t in tables.values() if col in t], ignore_index=True)
        r = pd.to_numeric(r, errors="coerce").dropna()
        r = r[r > 0]
        if len(r):
            g = float(np.exp(np.log(r).mean()))
            out.append(f"{n}/{names[0]} train_step throughput: {g:.2f}x geometric mean over {len(r)} cases "
                       f"(range {r.min():.2f}x-{r.max():.2f}x)")  # fmt: skip
    return "; ".join(out) or "No train_step case in more than one run."


def render_html(runs: pd.DataFrame, diff: pd.DataFrame, tables: dict[str, pd.DataFrame], uri: str) -> str:
    names = list(runs["run"])
    lead = page.para(verdict(tables, names), "verdict") + page.para(
        NOTE + " The ratios describe the runs; they are not a gate (python -m bench compare judges with noise)."
    )
    blocks = [
        page.Block("Runs", page.table(runs.drop(columns="path"))),
        page.Block("What differs", page.table(diff, empty="Nothing: same machine and settings.")),
        page.Block(
            "Throughput per run",
            page.figure(uri, "samples/s per run", "train_step at the largest batch, linear axis from 0."),
        ),  # fmt: skip
    ]
    blocks += [page.Block(f"Speed: {model}", page.table(t, what="cases"), level=3) for model, t in tables.items()]
    return page.page(f"nnbench: {len(runs)} runs side by side", lead, blocks)


def write_side_by_side(run_dirs: list[str | Path], out: str | Path) -> Path:
    """Write ``OUTPUT_FILES`` into ``out``; returns the HTML path."""
    dirs = [resolve_run_dir(p) for p in run_dirs]
    all_frames = [load_run(d) for d in dirs]
    names = labels(len(dirs))
    runs = runs_table(dirs, all_frames, names)
    diff = env_differences([run_settings(f) for f in all_frames], names)
    tables = speed_side_by_side(all_frames, names)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fig = fig_side_by_side(tables, runs)
    fig.savefig(out / "side_by_side.png", dpi=80)
    uri = render.png_uri(fig)
    (out / "side_by_side.md").write_text(render_markdown(runs, diff, tables, "side_by_side.png"), encoding="utf-8")
    (out / "side_by_side.html").write_text(render_html(runs, diff, tables, uri), encoding="utf-8")
    return out / "side_by_side.html"
