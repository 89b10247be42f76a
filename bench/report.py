"""Reports of one benchmark run: tidy DataFrames, Parquet/CSV, a Markdown summary and one
self-contained HTML page.

``load_run(run_dir)`` reads ``run.json`` and ``results.jsonl`` (``bench.results``) into one
tidy ``pandas.DataFrame`` per record kind (one row per measurement, every column of the
kind present even when no record filled it). The run metadata is flattened (nested keys
joined with ``.``) and joined onto every row: the machine as ``env.<key>`` columns (CPU model,
cores, threads, BLAS, library versions, GPU, git commit, ... whatever ``bench.envinfo``
recorded), the run's settings as ``run.<key>`` (``run.threads``, ``run.profile.name``, ...).

``write_report(run_dir)`` writes into the run directory:

- ``results.parquet`` and ``results.csv``: all kinds in ONE long table (column ``kind``
  says which; columns a kind does not have are empty). ``samples_s`` stays a list column
  in Parquet and is JSON text in CSV; object columns of mixed type (``setting.value``) are
  stored as JSON text in both.
- ``summary.md``: environment, availability (skips with their reason), agreement, speed,
  compile times, accuracy, errors.
- ``report.html``: the same tables plus matplotlib figures embedded as base64 PNG; no
  external assets.

Derived speed columns the runner left empty (samples/s, speedups against numpy and
pure_python, fraction of peak) are filled from the medians of the same run, by the run's own
``bench.derived.fill_derived``. Partial runs (some kinds missing) and skipped implementations
are fine: missing sections say so.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.derived import DERIVED_COLUMNS, fill_derived
from bench.headline import headline_markdown, headline_tables, stability_lines, usable_cores
from bench.results import COMMON, KIND_COLUMNS, RESULTS_FILE, RUN_FILE, SchemaError, check_version, read_records
from bench.stability import case_table

ENV_PREFIX = "env."  # run.json's machine description (its "env"): env.hostname, env.cpu_model, ...
RUN_PREFIX = "run."  # run.json's other keys: run.threads, run.started, run.profile.name, ...
# left to run.json: joined onto every row they would make the tidy tables mostly repeated text
BULKY_META = ("profile.", "specs.", "registry.", "argv")
SPEED_KEYS = ["model", "dtype", "phase", "batch_size"]
GATE_FILE = "gate.json"  # the regression gate's verdict, when run --gate ran it
OUTPUT_FILES = ("results.parquet", "results.csv", "summary.md", "report.html")


class RunDirError(ValueError):
    """The path is not a readable run directory."""


# ----------------------------------------------------------------------------- loading


def resolve_run_dir(path: str | Path) -> Path:
    """A run directory, following ``reports/latest`` whether it is a symlink or a small
    text file holding the run's path (relative to its own folder)."""
    p = Path(path)
    if p.is_file() and p.name != RESULTS_FILE and p.stat().st_size < 4096:
        target = p.read_text(encoding="utf-8").strip()
        if target:
            q = Path(target)
            p = q if q.is_absolute() else p.parent / q
    if not p.exists():
        raise RunDirError(f"run directory not found: {path}")
    if not p.is_dir():
        raise RunDirError(f"not a run directory (not a folder): {path}")
    if not (p / RESULTS_FILE).is_file():
        raise RunDirError(f"not a run directory (no {RESULTS_FILE}): {path}")
    return p


def read_run_meta(run_dir: Path) -> dict[str, Any]:
    """``run.json`` (``{}`` when absent: a run that died before writing it is still read)."""
    path = run_dir / RUN_FILE
    if not path.is_file():
        return {}
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise SchemaError(f"{path}: not JSON: {e}") from e
    if not isinstance(meta, dict):
        raise SchemaError(f"{path}: expected a JSON object")
    if "schema_version" in meta:
        check_version(meta["schema_version"], str(path))
    return meta


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> ``{"a.b": scalar}``; lists become JSON text."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = json.dumps(v, default=str)
        else:
            out[key] = v
    return out


def load_run(run_dir: str | Path) -> dict[str, pd.DataFrame]:
    """One tidy DataFrame per record kind present, env columns joined in.

    Raises ``RunDirError`` (not a run dir) or ``SchemaError`` (newer or malformed schema).
    """
    rd = resolve_run_dir(run_dir)
    return frames_from_records(read_records(rd), read_run_meta(rd))


def frames_from_records(records: list[dict[str, Any]], meta: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """``load_run`` without the files: records grouped by kind, run.json flattened in."""
    env = meta_columns(meta)
    # the derived speed columns a record lacks (a run cut short), as the run computes them
    records = fill_derived([dict(r) for r in records], overwrite=False)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for rec in records:
        by_kind.setdefault(str(rec.get("kind")), []).append(rec)
    frames: dict[str, pd.DataFrame] = {}
    for kind, recs in by_kind.items():
        cols = list(COMMON) + list(KIND_COLUMNS.get(kind, ()))
        extra = sorted({k for r in recs for k in r} - set(cols))
        df = pd.DataFrame.from_records(recs, columns=cols + extra)
        if df["run_id"].isna().all() and "run_id" in meta:
            df["run_id"] = meta["run_id"]
        if env:
            df = pd.concat([df, pd.DataFrame({k: [v] * len(df) for k, v in env.items()}, index=df.index)], axis=1)
        frames[kind] = df
    if "speed" in frames:
        speed = frames["speed"]
        for c in ("median_s", "batch_size", "gflops", *DERIVED_COLUMNS):
            speed[c] = pd.to_numeric(speed[c], errors="coerce")
    return frames


def meta_columns(meta: dict[str, Any]) -> dict[str, Any]:
    """run.json as columns, each named once: ``env.<key>`` for the machine (run.json's ``env``),
    ``run.<key>`` for the rest, less the bulky parts (``BULKY_META``) but the profile's name."""
    cols = {}
    for k, v in flatten(meta).items():
        if not k.startswith(BULKY_META):
            cols[k if k.startswith(ENV_PREFIX) else RUN_PREFIX + k] = v
    if isinstance(meta.get("profile"), dict) and "name" in meta["profile"]:
        cols[RUN_PREFIX + "profile.name"] = meta["profile"]["name"]
    return cols


def run_meta(frames: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """The flattened run.json back from any frame's ``env.``/``run.`` columns, keyed as ``flatten``
    keys it (``env.cpu_model``, ``threads``, ``profile.name``)."""
    for df in frames.values():
        if len(df):
            meta = {c: df[c].iloc[0] for c in df.columns if c.startswith(ENV_PREFIX)}
            meta |= {c[len(RUN_PREFIX) :]: df[c].iloc[0] for c in df.columns if c.startswith(RUN_PREFIX)}
            return meta
    return {}


# ----------------------------------------------------------------------------- tables


def _bools(s: pd.Series) -> pd.Series:
    """Truthiness of a column that may hold bools, None or NaN (missing is False)."""
    return s.map(lambda v: False if _cell(v) is None else bool(v)).astype(bool)


def _impl_order(frames: dict[str, pd.DataFrame]) -> dict[str, int]:
    try:
        import implementations

        names = implementations.names()
    except Exception:  # the report must not depend on the registry importing cleanly
        names = []
    seen = list(names)
    for df in frames.values():
        seen += [i for i in df["impl"].dropna().unique() if i not in seen]
    return {n: i for i, n in enumerate(seen)}


def _sort(df: pd.DataFrame, keys: list[str], order: dict[str, int]) -> pd.DataFrame:
    keys = [k for k in keys if k in df.columns]
    if not keys:
        return df
    return df.sort_values(keys, key=lambda s: s.map(order) if s.name == "impl" else s, kind="stable")


def availability_table(frames: dict[str, pd.DataFrame]) -> pd.DataFrame | None:
    df = frames.get("availability")
    if df is None or df.empty:
        return None
    t = df.drop_duplicates(["impl"], keep="last")[["impl", "available", "reason", "requires"]]
    return _sort(t, ["impl"], _impl_order(frames)).reset_index(drop=True)


def agreement_table(frames: dict[str, pd.DataFrame]) -> pd.DataFrame | None:
    """Per (impl, model, dtype): passed, worst max_rel per phase, first divergent layer."""
    df = frames.get("agreement")
    if df is None or df.empty:
        return None
    df = df.copy()
    df["max_rel"] = pd.to_numeric(df["max_rel"], errors="coerce")
    keys = ["impl", "model", "dtype"]
    worst = df.pivot_table(index=keys, columns="phase", values="max_rel", aggfunc="max", dropna=False)
    worst.columns = [f"worst_rel_{c}" for c in worst.columns]
    g = df.groupby(keys, dropna=False)
    summary = pd.DataFrame(
        {
            "passed": g["ok"].agg(lambda s: bool(_bools(s).all())),
            "failed_tensors": g["ok"].agg(lambda s: int((~_bools(s)).sum())),
            "first_divergent_layer": g["first_divergent_layer"].agg(lambda s: next(iter(s.dropna()), None)),
        }
    )
    t = summary.join(worst).reset_index()
    return _sort(t, ["model", "dtype", "impl"], _impl_order(frames)).reset_index(drop=True)


def speed_table(frames: dict[str, pd.DataFrame]) -> pd.DataFrame | None:
    df = frames.get("speed")
    if df is None or df.empty:
        return None
    keys = ["impl"] + SPEED_KEYS + (["process"] if "process" in df else [])
    t = df.drop_duplicates(keys, keep="last").copy()
    t["median_ms"] = pd.to_numeric(t["median_s"], errors="coerce") * 1e3
    t["iqr_ms"] = pd.to_numeric(t["iqr_s"], errors="coerce") * 1e3
    cols = ["model", "dtype", "phase", "batch_size", "impl"] + (["process"] if "process" in t else [])
    cols += ["median_ms", "iqr_ms", "rounds", "samples_per_s"]
    cols += ["speedup_vs_numpy", "x_vs_pure_python_b1", "gflops", "frac_peak", "validated"]
    return _sort(t[cols], ["model", "dtype", "phase", "batch_size", "impl"], _impl_order(frames)).reset_index(drop=True)


def accuracy_tables(frames: dict[str, pd.DataFrame]) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """(per-epoch test accuracy, final summary with spread over seeds and time to target)."""
    df = frames.get("accuracy")
    if df is None or df.empty:
        return None
    df = df.copy()
    for c in ("test_acc", "epoch_s", "time_to_target_s", "extrapolated_epoch_s", "epoch"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    keys = ["impl", "model", "dtype"]
    per_epoch = df.pivot_table(index=keys + ["seed"], columns="epoch", values="test_acc", aggfunc="last")
    per_epoch.columns = [f"epoch_{int(c)}" for c in per_epoch.columns]
    last = df.sort_values("epoch").groupby(keys + ["seed"], dropna=False).tail(1)
    g = last.groupby(keys, dropna=False)
    final = pd.DataFrame(
        {
            "seeds": g["seed"].nunique(),
            "epochs": g["epoch"].max(),
            "final_acc_mean": g["test_acc"].mean(),
            "final_acc_std": g["test_acc"].std(),
            "train_samples": g["train_samples"].max(),
            "epoch_s_mean": df.groupby(keys, dropna=False)["epoch_s"].mean(),
            "extrapolated_epoch_s": df.groupby(keys, dropna=False)["extrapolated_epoch_s"].max(),
            "target_acc": g["target_acc"].max(),
            "time_to_target_s": df.groupby(keys, dropna=False)["time_to_target_s"].min(),
            "validated": g["validated"].agg(lambda s: bool(_bools(s).all())),
        }
    ).reset_index()
    order = _impl_order(frames)
    return (
        _sort(per_epoch.reset_index(), ["model", "dtype", "impl"], order).reset_index(drop=True),
        _sort(final, ["model", "dtype", "impl"], order).reset_index(drop=True),
    )


def stability_table(frames: dict[str, pd.DataFrame]) -> pd.DataFrame | None:
    df = frames.get("speed")
    if df is None or df.empty:
        return None
    t = case_table(df, usable_cores(frames))
    return _sort(t, ["model", "dtype", "phase", "batch_size", "impl"], _impl_order(frames)).reset_index(drop=True)


def recipe_sections(frames: dict[str, pd.DataFrame]) -> list[Section]:
    """Final accuracy with binomial intervals, equivalence with NumPy, dnn against the course
    (``bench.recipes``)."""
    from bench import recipes

    acc = frames.get("accuracy")
    if acc is None or acc.empty:
        return []
    try:
        return [Section(t, text, table) for t, text, table in recipes.sections(acc)]
    except Exception as e:  # analysis of odd records must not lose the report
        return [Section("Recipes", f"analysis failed: {type(e).__name__}: {e}")]


def error_table(frames: dict[str, pd.DataFrame]) -> pd.DataFrame | None:
    """Error records, less the availability skips (the Availability section lists those)."""
    df = frames.get("error")
    if df is None or df.empty:
        return None
    df = df[~((df["phase"] == "availability") & (df["status"] == "skipped"))]
    return simple_table({**frames, "error": df}, "error", ["impl", "model", "dtype", "phase", "status", "error"])


def simple_table(frames: dict[str, pd.DataFrame], kind: str, cols: list[str]) -> pd.DataFrame | None:
    df = frames.get(kind)
    if df is None or df.empty:
        return None
    return _sort(df[cols], ["model", "impl"], _impl_order(frames)).reset_index(drop=True)


def env_table(frames: dict[str, pd.DataFrame]) -> pd.DataFrame | None:
    """run.json, machine first (``env.*``), then run settings; the spec layer lists
    (``specs.*``) are left to run.json."""
    meta = run_meta(frames)
    if not meta:
        return None
    keys = sorted((k for k in meta if not k.startswith("specs.")), key=lambda k: (not k.startswith("env."), "." in k))
    return pd.DataFrame({"key": keys, "value": [_fmt(meta[k]) for k in keys]})


# ----------------------------------------------------------------------------- sections


@dataclass
class Section:
    title: str
    text: str = ""
    table: pd.DataFrame | None = None


def build_sections(frames: dict[str, pd.DataFrame]) -> list[Section]:
    """The report content, shared by the Markdown and HTML writers."""
    sec = [Section("Environment", "From run.json.", env_table(frames))]
    sec.append(
        Section("Availability", "Skipped implementations are listed with their reason.", availability_table(frames))
    )
    sec.append(
        Section(
            "Agreement with the NumPy float64 reference",
            "Worst relative error (max_abs / max|ref|) per phase; `passed` is every tensor within tolerance.",
            agreement_table(frames),
        )
    )
    sec.append(
        Section(
            "Speed",
            "Median and IQR per call; `speedup_vs_numpy`: per-sample throughput against NumPy at the same "
            "batch size; `x_vs_pure_python_b1`: per-sample throughput at this case's batch size against "
            "pure Python at batch 1 (not the same batch: the ratio includes what batching gains); both within "
            "this run, from the case's median of process medians. `frac_peak`: GFLOP/s against the in-run "
            "GEMM peak in the case's dtype; `validated` = agreement passed.",
            speed_table(frames),
        )
    )
    sec.append(
        Section(
            "Speed stability (per case, across processes)",
            "median_s is the median of the process medians (what the gate judges); flags say why a "
            "figure is shaky (see bench/stability.py for the limits).",
            stability_table(frames),
        )
    )
    sec.append(Section("Measured peak", "", simple_table(frames, "peak", ["dtype", "gemm_n", "gflops", "median_s"])))
    sec.append(
        Section(
            "Compile / JIT time",
            "Cold first call apart from steady state.",
            simple_table(frames, "compile", ["impl", "model", "dtype", "phase", "cold_s", "warm_cache_s", "steady_s"]),
        )
    )
    acc = accuracy_tables(frames)
    sec.append(Section("Accuracy (final epoch, time to target)", "", acc[1] if acc else None))
    sec.append(Section("Test accuracy per epoch", "", acc[0] if acc else None))
    sec += recipe_sections(frames)
    sec.append(
        Section(
            "Settings",
            "Per implementation: what changes its numbers.",
            simple_table(frames, "setting", ["impl", "model", "key", "value"]),
        )
    )
    sec.append(
        Section(
            "Errors",
            "Cases that produced no figures (crash, timeout, oom, not_implemented, disagrees, a part a profile "
            "skipped); implementations not available here are listed under Availability, not here.",
            error_table(frames),
        )
    )
    return sec


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return f"[{len(v)} values]"
    return str(v)


def _cell(v: Any) -> Any:
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return v


def markdown_table(df: pd.DataFrame, max_chars: int = 300) -> str:
    """A GitHub Markdown table (no tabulate dependency); pipes and newlines escaped."""

    def esc(v: Any) -> str:
        s = _fmt(_cell(v)).replace("|", "\\|").replace("\n", " ")
        return s if len(s) <= max_chars else s[: max_chars - 1] + "…"

    head = "| " + " | ".join(esc(c) for c in df.columns) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(esc(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *rows])


def render_markdown(
    frames: dict[str, pd.DataFrame], run_id: str, gate: dict[str, Any] | None = None, injected: str | None = None
) -> str:
    head = [f"# nnbench run `{run_id}`", "", *injection_lines(injected), *gate_lines(gate)]
    out = [*head, *headline_markdown(frames, markdown_table)]
    for s in build_sections(frames):
        out += [f"## {s.title}", ""]
        if s.text:
            out += [s.text, ""]
        out += [markdown_table(s.table) if s.table is not None and len(s.table) else "_No records of this kind._", ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------- figures


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _subplots(n: int, width: float = 5.5, height: float = 3.8) -> tuple[Any, list[Any]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False)
    return fig, list(axes[0])


def _largest_batch_train(speed: pd.DataFrame) -> pd.DataFrame:
    """train_step rows (else the last phase) at each model's largest batch."""
    s = speed.drop_duplicates(["impl"] + SPEED_KEYS, keep="last")
    phase = "train_step" if (s["phase"] == "train_step").any() else s["phase"].iloc[-1]
    s = s[s["phase"] == phase]
    big = s.groupby("model")["batch_size"].transform("max")
    return s[s["batch_size"] == big]


def fig_speedup(frames: dict[str, pd.DataFrame], col: str = "speedup_vs_numpy", label: str = "") -> str | None:
    speed = frames.get("speed")
    if speed is None or speed.empty or pd.to_numeric(speed[col], errors="coerce").isna().all():
        return None
    s = _largest_batch_train(speed)
    models = list(s["model"].unique())
    fig, axes = _subplots(len(models))
    order = _impl_order(frames)
    for ax, m in zip(axes, models, strict=True):
        d = _sort(s[s["model"] == m], ["impl"], order)
        vals = pd.to_numeric(d[col], errors="coerce")
        ax.bar(d["impl"].astype(str), vals, color=["C2" if v else "C3" for v in _bools(d["validated"])])
        ax.axhline(1.0, color="k", lw=0.8)
        ax.ticklabel_format(axis="y", style="plain", useOffset=False)  # ratios: linear, plain ticks
        ax.set_title(f"{m}: {d['phase'].iloc[0]}, batch {int(d['batch_size'].iloc[0])}")
        ax.set_ylabel(label or col)
        ax.tick_params(axis="x", rotation=45)
    return _png(fig)


def fig_throughput(frames: dict[str, pd.DataFrame]) -> str | None:
    speed = frames.get("speed")
    if speed is None or speed.empty:
        return None
    s = speed.drop_duplicates(["impl"] + SPEED_KEYS, keep="last")
    phase = "train_step" if (s["phase"] == "train_step").any() else s["phase"].iloc[-1]
    s = s[s["phase"] == phase]
    models = list(s["model"].unique())
    fig, axes = _subplots(len(models))
    for ax, m in zip(axes, models, strict=True):
        for impl, d in _sort(s[s["model"] == m], ["impl", "batch_size"], _impl_order(frames)).groupby(
            "impl", sort=False
        ):
            ax.plot(d["batch_size"], d["samples_per_s"], marker="o", label=str(impl))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("batch size")
        ax.set_ylabel("samples/s")
        ax.set_title(f"{m}: {phase} throughput")
        ax.legend(fontsize=7)
    return _png(fig)


def fig_accuracy(frames: dict[str, pd.DataFrame]) -> str | None:
    """Test accuracy per epoch, a panel per model, a line per implementation (mean over seeds,
    band min..max) and the course's curve for ``dnn`` (``bench.recipes.fig_curves``)."""
    from bench.recipes import fig_curves

    acc = frames.get("accuracy")
    if acc is None or acc.empty:
        return None
    return _png(fig_curves(acc, _impl_order(frames)))


def fig_agreement(frames: dict[str, pd.DataFrame]) -> str | None:
    agr = frames.get("agreement")
    if agr is None or agr.empty:
        return None
    a = agr.copy()
    a["max_rel"] = pd.to_numeric(a["max_rel"], errors="coerce").clip(lower=1e-18).astype(float)
    a["tol"] = pd.to_numeric(a["tol"], errors="coerce")
    keys = list(a.groupby(["model", "dtype"]).groups)
    fig, axes = _subplots(len(keys), width=7.0)
    for ax, (m, dt) in zip(axes, keys, strict=True):
        d = a[(a["model"] == m) & (a["dtype"] == dt)]
        tensors = list(dict.fromkeys(d["phase"].astype(str) + ":" + d["tensor"].astype(str)))
        xpos = {t: i for i, t in enumerate(tensors)}
        finite = d["max_rel"][np.isfinite(d["max_rel"])]
        cap = max(1.0, 10 * float(finite.max())) if len(finite) else 1.0
        for impl, e in _sort(d, ["impl"], _impl_order(frames)).groupby("impl", sort=False):
            x = (e["phase"].astype(str) + ":" + e["tensor"].astype(str)).map(xpos)
            ok = np.isfinite(e["max_rel"])
            ax.scatter(x[ok], e["max_rel"][ok], s=14, label=str(impl))
            if (~ok).any():  # inf / NaN errors drawn at the cap, so a broken backend is not hidden
                ax.scatter(x[~ok], np.full(int((~ok).sum()), cap), s=30, marker="x", label=f"{impl}: inf/NaN")
        tol = d.groupby(d["phase"].astype(str) + ":" + d["tensor"].astype(str))["tol"].max()
        ax.plot([xpos[t] for t in tol.index], tol.values, "k_", ms=12, label="tolerance")
        ax.set_yscale("log")
        ax.set_xticks(range(len(tensors)))
        ax.set_xticklabels(tensors, rotation=90, fontsize=6)
        ax.set_ylabel("max relative error")
        ax.set_title(f"{m} {dt}: agreement vs NumPy float64")
        ax.legend(fontsize=7)
    return _png(fig)


def fig_frac_peak(frames: dict[str, pd.DataFrame]) -> str | None:
    speed = frames.get("speed")
    if speed is None or speed.empty or pd.to_numeric(speed["frac_peak"], errors="coerce").isna().all():
        return None
    s = _largest_batch_train(speed)
    models = list(s["model"].unique())
    fig, axes = _subplots(len(models))
    for ax, m in zip(axes, models, strict=True):
        d = _sort(s[s["model"] == m], ["impl"], _impl_order(frames))
        ax.bar(d["impl"].astype(str), pd.to_numeric(d["frac_peak"], errors="coerce"))
        ax.set_yscale("log")
        ax.set_ylabel("fraction of measured GEMM peak")
        ax.set_title(f"{m}: {d['phase'].iloc[0]}, batch {int(d['batch_size'].iloc[0])}")
        ax.tick_params(axis="x", rotation=45)
    return _png(fig)


FIGURES = (
    ("Speedup against NumPy (green: validated, red: not)", fig_speedup),
    ("Throughput against batch size", fig_throughput),
    ("Test accuracy per epoch (band: min..max over seeds; dashed: the course's dnn)", fig_accuracy),
    ("Agreement error per implementation and tensor", fig_agreement),
    ("Fraction of this machine's measured peak", fig_frac_peak),
)


# ----------------------------------------------------------------------------- HTML

_CSS = (
    "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:12px}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#eee}"
    "img{max-width:100%}.note{color:#555}"
)


def headline_html(frames: dict[str, pd.DataFrame]) -> list[str]:
    """The headline block (``bench.headline``) as HTML: stability verdict, a table per model."""
    cores = usable_cores(frames)
    parts = ["<h2>Headline</h2>"]
    for line in stability_lines(frames, cores):
        if line:
            text = html.escape(line.lstrip("- ")).replace("**", "")
            parts.append(f"<p class='note'><b>{text}</b></p>" if line.startswith("**") else f"<p>{text}</p>")
    for title, t in headline_tables(frames, cores).items():
        parts.append(f"<h3>{html.escape(title)}</h3>{_html_table(t)}")
    return parts


def _html_table(df: pd.DataFrame) -> str:
    shown = df.map(lambda v: _fmt(_cell(v))) if len(df) else df
    return shown.to_html(index=False, escape=True, border=0)


def injection_lines(injected: str | None) -> list[str]:
    """A run made slower on purpose (``bench/inject.py``) says so before anything else."""
    if not injected:
        return []
    return [f"**Injected slowdown (gate validation, not a measurement): `{injected}`.**", ""]


def gate_lines(gate: dict[str, Any] | None) -> list[str]:
    """The regression gate's verdict (``gate.json``, written by ``run --gate``), when it ran."""
    if not gate:
        return []
    confirm = (
        f"; a confirmation run re-measured the speed failures ({gate.get('confirm_dir')})"
        if gate.get("confirmation")
        else "; no confirmation run was needed"
    )
    return [f"**Regression gate: {gate.get('verdict')}** against `{gate.get('baseline')}`{confirm}.", ""]


def render_html(
    frames: dict[str, pd.DataFrame], run_id: str, gate: dict[str, Any] | None = None, injected: str | None = None
) -> str:
    top = [*injection_lines(injected), *gate_lines(gate)]
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>nnbench {html.escape(run_id)}</title><style>{_CSS}</style></head><body>",
        f"<h1>nnbench run {html.escape(run_id)}</h1>",
        *(f"<p><b>{html.escape(line.replace('**', '').replace('`', ''))}</b></p>" for line in top if line),
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
        parts.append(_html_table(s.table) if has else "<p class='note'>No records of this kind.</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- files


def combined_frame(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """All kinds in one long table; mixed-type object columns as JSON text."""
    parts = [df for df in frames.values() if len(df)]
    if not parts:
        return pd.DataFrame(columns=list(COMMON))
    df = pd.concat(parts, ignore_index=True, sort=False)
    for c in df.columns:
        if df[c].dtype != object:
            continue
        types = {type(v) for v in df[c] if _cell(v) is not None}
        if len(types) > 1 or (types and not types <= {str, list, bool}):
            df[c] = df[c].map(lambda v: None if _cell(v) is None else json.dumps(v, default=str))
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
    (rd / "summary.md").write_text(render_markdown(frames, run_id, gate, injected), encoding="utf-8")
    out = rd / "report.html"
    out.write_text(render_html(frames, run_id, gate, injected), encoding="utf-8")
    return out
