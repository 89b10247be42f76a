"""The report's content as tables, one per section (``build_sections``): environment,
availability, agreement, speed, stability, peak, compile time, accuracy, recipes, settings,
errors. ``bench.report.run_report`` renders them as Markdown and HTML."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from bench.measure.frames import SPEED_KEYS, run_meta
from bench.measure.stability import case_table
from bench.report.headline import usable_cores
from bench.report.render import bools, fmt, impl_order, sort_rows


@dataclass
class Section:
    title: str
    text: str = ""
    table: pd.DataFrame | None = None


def availability_table(frames: dict[str, pd.DataFrame]) -> pd.DataFrame | None:
    df = frames.get("availability")
    if df is None or df.empty:
        return None
    t = df.drop_duplicates(["impl"], keep="last")[["impl", "available", "reason", "requires"]]
    return sort_rows(t, ["impl"], impl_order(frames)).reset_index(drop=True)


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
            "passed": g["ok"].agg(lambda s: bool(bools(s).all())),
            "failed_tensors": g["ok"].agg(lambda s: int((~bools(s)).sum())),
            "first_divergent_layer": g["first_divergent_layer"].agg(lambda s: next(iter(s.dropna()), None)),
        }
    )
    t = summary.join(worst).reset_index()
    same = determinism(frames)
    t["deterministic"] = [same.get(k, "") for k in t[keys].itertuples(index=False, name=None)]
    return sort_rows(t, ["model", "dtype", "impl"], impl_order(frames)).reset_index(drop=True)


def determinism(frames: dict[str, pd.DataFrame]) -> dict[tuple[str, str, str], str]:
    """Per (impl, model, dtype): did every speed process get bit-identical parameters after the
    same training steps from the same seed (``determinism`` records, ``bench.measure.case``)?"""
    df = frames.get("determinism")
    if df is None or df.empty:
        return {}
    out = {}
    for key, g in df.groupby(["impl", "model", "dtype"], dropna=False):
        g = g.drop_duplicates("process", keep="last")
        n, k, steps = len(g), g["digest"].nunique(), int(pd.to_numeric(g["steps"], errors="coerce").max())
        if n < 2:
            out[key] = f"not decidable (1 process, {steps} steps)"
        elif k == 1:
            out[key] = f"yes (bit-identical in {n} processes, {steps} steps)"
        else:
            out[key] = f"no ({k} different results in {n} processes, {steps} steps)"
    return out


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
    t["limit_ms"] = pd.to_numeric(t["limit_s"], errors="coerce") * 1e3
    t["MB"] = pd.to_numeric(t["bytes"], errors="coerce") / 1e6
    cols += ["speedup_vs_numpy", "x_vs_pure_python_b1", "gflops", "frac_peak", "frac_peak_model"]
    cols += ["MB", "limit_ms", "bound", "x_of_limit", "validated"]
    return sort_rows(t[cols], ["model", "dtype", "phase", "batch_size", "impl"], impl_order(frames)).reset_index(
        drop=True
    )


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
            "validated": g["validated"].agg(lambda s: bool(bools(s).all())),
        }
    ).reset_index()
    order = impl_order(frames)
    return (
        sort_rows(per_epoch.reset_index(), ["model", "dtype", "impl"], order).reset_index(drop=True),
        sort_rows(final, ["model", "dtype", "impl"], order).reset_index(drop=True),
    )


def stability_table(frames: dict[str, pd.DataFrame]) -> pd.DataFrame | None:
    df = frames.get("speed")
    if df is None or df.empty:
        return None
    t = case_table(df, usable_cores(frames))
    return sort_rows(t, ["model", "dtype", "phase", "batch_size", "impl"], impl_order(frames)).reset_index(drop=True)


def recipe_sections(frames: dict[str, pd.DataFrame]) -> list[Section]:
    """Final accuracy with binomial intervals, equivalence with NumPy, dnn against the course
    (``bench.check.recipes``)."""
    from bench.check import recipes

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
    return sort_rows(df[cols], ["model", "impl"], impl_order(frames)).reset_index(drop=True)


def env_table(frames: dict[str, pd.DataFrame]) -> pd.DataFrame | None:
    """run.json, machine first (``env.*``), then run settings; the spec layer lists
    (``specs.*``) are left to run.json."""
    meta = run_meta(frames)
    if not meta:
        return None
    keys = sorted((k for k in meta if not k.startswith("specs.")), key=lambda k: (not k.startswith("env."), "." in k))
    return pd.DataFrame({"key": keys, "value": [fmt(meta[k]) for k in keys]})


def build_sections(frames: dict[str, pd.DataFrame]) -> list[Section]:
    """The report content, shared by the Markdown and HTML writers."""
    sec = [Section("Environment", "From run.json.", env_table(frames))]
    sec.append(
        Section("Availability", "Skipped implementations are listed with their reason.", availability_table(frames))
    )
    sec.append(
        Section(
            "Agreement with the NumPy float64 reference",
            "Worst relative error (max_abs / max|ref|) per phase; `passed` is every tensor within tolerance; "
            "`deterministic`: whether every speed process (a fresh process each) got bit-identical parameters "
            "after the same training steps (dropout on) from the same parameters, batch and seed.",
            agreement_table(frames),
        )
    )
    sec.append(
        Section(
            "Speed",
            "Median and IQR per call; `speedup_vs_numpy`: per-sample throughput against NumPy at the same "
            "batch size; `x_vs_pure_python_b1`: per-sample throughput at this case's batch size against "
            "pure Python at batch 1 (not the same batch: the ratio includes what batching gains); both within "
            "this run, from the case's median of process medians. `gflops`: the FLOPs the implementation "
            "performs (direct convolutions; Numba's Winograd blocks count their transforms and 16 GEMMs, "
            "about 2.3x fewer) per second; `frac_peak`: that against the in-run GEMM peak in the case's "
            "dtype; `frac_peak_model`: the model's direct FLOP count per second against the same peak (an "
            "effective rate, comparable across algorithms: above 1 where an algorithm skips work); "
            "`MB`: the phase's compulsory memory traffic, counted from the spec; `limit_ms`: the roofline's "
            "bound, the longer of model FLOPs at the GEMM peak and `MB` at the bandwidth of the memory level "
            "the phase's working set fits in (`bound` says which); `x_of_limit`: `limit_ms` over the median "
            "(1: at the machine's limit); `validated` = agreement passed.",
            speed_table(frames),
        )
    )
    sec.append(
        Section(
            "Speed stability (per case, across processes)",
            "median_s is the median of the process medians (what the gate judges); flags say why a "
            "figure is shaky (see bench/measure/stability.py for the limits).",
            stability_table(frames),
        )
    )
    sec.append(Section("Measured peak", "", simple_table(frames, "peak", ["dtype", "gemm_n", "gflops", "median_s"])))
    sec.append(
        Section(
            "Measured bandwidth",
            "STREAM-style copy and triad over NumPy arrays sized for each memory level (half the L2, half the "
            "last-level cache, 4x the last-level cache for DRAM), best round, before and after the cases; the "
            "triad is the roofline's memory roof (bench/measure/probe/stream.py).",
            simple_table(
                frames, "bandwidth", ["when", "threads", "level", "kernel", "ws_bytes", "gbps", "gbps_median"]
            ),
        )
    )
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
