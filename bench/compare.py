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
   the in-run ratio ``r = median(t_impl) / median(t_ref)`` is formed, with ``t_ref`` the
   same case of ``numpy`` in the same run; ``numpy`` itself, and a case numpy did not
   measure in both runs (pure Python runs at batch 1 only), is referred to the in-run
   float32 GEMM calibration (``peak`` record). The statistic is ``R = r_cur / r_base``
   (> 1: slower relative to the reference). Its confidence interval is a percentile
   bootstrap (``--bootstrap`` replicates, default 2000, fixed seed: the gate is
   deterministic) of the medians of the raw per-round times ``samples_s``, each sample set
   resampled once per replicate (a reference shared by several cases is resampled
   consistently); ``--ci`` is the two-sided level (default 0.99). With several worker
   processes per case, a case's figure is the median of its process medians, and the
   bootstrap is stratified by process (``_Boot``).
   - A case FAILS when its whole interval lies above the threshold: ``CI_low > 1.5``
     (``--threshold``) against numpy, ``CI_low > 1.5`` (``--peak-threshold``) against
     the GEMM. 1.5 and not 1.25: the bootstrap sees only round-to-round noise within a
     process, not a neighbour that comes and goes between worker processes; with a
     4% per-process factor the synthetic A/A reached CI_low 1.33 in 300 pairs.
     A case with fewer than 5 rounds (``min_rounds``) in any of its four sample sets
     (pure Python gets 2-5) cannot fail alone: a bootstrap of 2-4 values understates the
     spread; it is a WARN and counts in the aggregate.
   - An implementation FAILS when the geometric mean of R over all its cases (row
     ``model == phase == "ALL"``), with the CI of the same replicates' geometric means,
     has ``CI_low`` above the same threshold.
   - ``CI_high < 1/threshold`` is reported as faster (a note: refresh the baseline).
   - A row whose interval contains the threshold (``CI_low <= thr < CI_high``) cannot be
     decided: it says "inconclusive" (too noisy), never "ok", does not fail, and the final
     line counts such rows and asks for a repeat.
   Without raw samples a set is its median alone (no spread). A case with no in-run
   reference, or measured in only one run, is a note.
5. Confirmation (``python -m bench run --gate BASELINE``, what CI runs): on this machine
   kind a whole worker process now and then runs 1.5-1.7x slower than its neighbours
   (seen for NumPy and for PyTorch, same code, same data), which no in-process statistic
   can see. When speed is the *only* failing check, the run re-measures the failing
   implementations (and NumPy, their reference) in fresh worker processes and gates on that
   confirmation run: a regression fails only when it reproduces. Agreement, accuracy and
   crash failures are never re-measured.
6. A gate that compared nothing (no speed case and no accuracy row judged in both runs:
   the baseline's implementations or models were not run) FAILS: it cannot PASS.
7. Required backends (``NNBENCH_REQUIRE``, comma-separated; tox sets it): one unavailable
   in CURRENT FAILS, where an optional one only warns (rule 2).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bench.report import RunDirError, load_run, read_run_meta, resolve_run_dir
from bench.results import SchemaError

FAIL, WARN, OK, NOTE = "FAIL", "WARN", "ok", "note"
INCONCLUSIVE = "inconclusive"  # the interval straddles the threshold: neither ok nor FAIL; re-measure
CRASH_STATUSES = ("crash", "timeout", "oom", "not_implemented")
SPEED_CASE = ["impl", "model", "dtype", "phase", "batch_size"]
REFERENCE = "numpy"
PEAK_REF = "gemm"


@dataclass(frozen=True)
class GateConfig:
    threshold: float = 1.5
    peak_threshold: float = 1.5
    ci: float = 0.99
    n_boot: int = 2000
    seed: int = 0
    min_rounds: int = 5
    acc_sigmas: float = 4.0
    acc_floor: float = 0.005
    default_test_samples: int = 10000
    classes: int = 10  # MNIST: accuracy at chance is 1 / classes
    within: float = 0.5  # quantile of one process's rounds that stands for the process
    across: str = "median"  # how the processes' figures combine: "median" or "min"


class BadInput(ValueError):
    """Input the gate cannot judge (exit 2)."""


# ----------------------------------------------------------------------------- helpers


def _as_samples(samples: Any, median: Any) -> np.ndarray | None:
    """Raw per-round seconds of a speed/peak record; its median alone when no samples."""
    if isinstance(samples, (list, tuple, np.ndarray)) and len(samples):
        a = np.asarray(samples, dtype=float)
        a = a[np.isfinite(a) & (a > 0)]
        if len(a):
            return a
    m = pd.to_numeric(median, errors="coerce")
    return np.array([float(m)]) if pd.notna(m) and m > 0 else None


Samples = list[np.ndarray]  # one array of per-round seconds per worker process


def _sample_sets(frames: dict[str, pd.DataFrame]) -> dict[tuple, Samples]:
    """``{(impl, model, dtype, phase, batch): [rounds of process 0, rounds of process 1, ...]}``
    plus ``{(PEAK_REF, dtype): [...]}`` (the GEMM before and after the cases count as two)."""
    out: dict[tuple, Samples] = {}
    speed = frames.get("speed")
    if speed is not None and len(speed):
        sp = speed.assign(process=speed["process"].fillna(0) if "process" in speed else 0)
        sp = sp.drop_duplicates(SPEED_CASE + ["process"], keep="last")
        for r in sp[SPEED_CASE + ["samples_s", "median_s"]].to_dict("records"):
            a = _as_samples(r["samples_s"], r["median_s"])
            if a is not None:
                out.setdefault(tuple(r[k] for k in SPEED_CASE), []).append(a)
    peak = frames.get("peak")
    if peak is not None and len(peak):
        for r in peak.to_dict("records"):
            a = _as_samples(r.get("samples_s"), r.get("median_s"))
            if a is not None:
                out.setdefault((PEAK_REF, r.get("dtype") or "float32"), []).append(a)
    return out


def center(sets: Samples, cfg: GateConfig | None = None) -> float:
    """The figure a case is judged by: each process's ``cfg.within`` quantile of its rounds,
    combined over the processes by ``cfg.across`` (median or min)."""
    cfg = cfg or GateConfig()
    per = [np.quantile(a, cfg.within) for a in sets]
    return float(np.min(per) if cfg.across == "min" else np.median(per))


class _Boot:
    """Bootstrap replicates of ``center``, stratified by process: each process's rounds are
    resampled within that process, and the replicate combines the processes' resampled
    figures as ``center`` does. The processes themselves are kept, not redrawn: with P = 3 a
    bootstrap over processes spans the slowest to the fastest process and could not fail even
    a 2x slowdown (measured on real quick runs). Each set is drawn once, so a set shared by
    several cases (the numpy reference, the GEMM) is resampled consistently."""

    def __init__(self, cfg: GateConfig) -> None:
        self.cfg, self.rng, self.cache = cfg, np.random.default_rng(cfg.seed), {}

    def _within(self, a: np.ndarray) -> np.ndarray:
        if len(a) == 1:
            return np.full(self.cfg.n_boot, a[0])
        idx = self.rng.integers(0, len(a), size=(self.cfg.n_boot, len(a)))
        return np.quantile(a[idx], self.cfg.within, axis=1)

    def __call__(self, label: str, key: tuple, sets: Samples) -> np.ndarray:
        if (label, key) not in self.cache:
            per = np.stack([self._within(a) for a in sets])  # (P, n_boot)
            comb = np.min(per, axis=0) if self.cfg.across == "min" else np.median(per, axis=0)
            self.cache[label, key] = comb
        return self.cache[label, key]


def _ci(reps: np.ndarray, cfg: GateConfig) -> tuple[float, float]:
    alpha = (1.0 - cfg.ci) / 2.0
    lo, hi = np.quantile(reps, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def _verdict(lo: float, hi: float, thr: float, ref: str) -> tuple[str, str]:
    """FAIL: the whole interval is above the threshold; ok: the whole interval is at or below
    it (a slowdown beyond the threshold is ruled out); otherwise the data cannot decide, and
    the row says so rather than "ok"."""
    if lo > thr:
        return FAIL, f"slower relative to {ref}: CI low {lo:.3f} > {thr}"
    if hi < 1.0 / thr:
        return NOTE, "faster beyond noise; consider refreshing the baseline"
    if hi > thr:
        return INCONCLUSIVE, f"too noisy to decide: CI [{lo:.3f}, {hi:.3f}] contains {thr}; re-measure"
    return OK, ""


def _last(df: pd.DataFrame | None, keys: list[str]) -> pd.DataFrame:
    if df is None or df.empty:
        return pd.DataFrame(columns=keys)
    return df.drop_duplicates(keys, keep="last")


def _ref_key(key: tuple, sb: dict, sc: dict) -> tuple:
    """numpy's same case; the GEMM for numpy itself and for a case numpy did not measure
    in both runs (pure Python runs at batch 1 only)."""
    impl, model, dtype, phase, batch = key
    same = (REFERENCE, model, dtype, phase, batch)
    if impl != REFERENCE and same in sb and same in sc:
        return same
    return (PEAK_REF, dtype)


def check_speed(base: dict[str, pd.DataFrame], cur: dict[str, pd.DataFrame], cfg: GateConfig) -> pd.DataFrame:
    """Rule 4: one row per case, then one ``phase == "ALL"`` row per (impl, dtype): the
    geometric mean of R over the implementation's cases, with its bootstrap CI."""
    sb, sc = _sample_sets(base), _sample_sets(cur)
    boot = _Boot(cfg)
    rows, logs = [], {}
    cases = sorted((k for k in sb if k in sc and k[0] != PEAK_REF), key=lambda k: tuple(str(x) for x in k))
    for key in cases:
        rk = _ref_key(key, sb, sc)
        ref, thr = (PEAK_REF, cfg.peak_threshold) if rk[0] == PEAK_REF else (REFERENCE, cfg.threshold)
        row: dict[str, Any] = dict(zip(SPEED_CASE, key, strict=True)) | {"ref": ref, "threshold": thr}
        if rk not in sb or rk not in sc:
            rows.append(row | {"verdict": NOTE, "detail": f"no in-run {ref} reference"})
            continue
        xb, rb, xc, rc = sb[key], sb[rk], sc[key], sc[rk]
        reps = (boot("c", key, xc) / boot("c", rk, rc)) / (boot("b", key, xb) / boot("b", rk, rb))
        lo, hi = _ci(reps, cfg)
        br, cr = center(xb, cfg) / center(rb, cfg), center(xc, cfg) / center(rc, cfg)
        verdict, detail = _verdict(lo, hi, thr, ref)
        if verdict == FAIL and min(min(len(a) for a in s) for s in (xb, rb, xc, rc)) < cfg.min_rounds:
            verdict, detail = WARN, f"{detail} (fewer than {cfg.min_rounds} rounds: judged by the aggregate only)"
        row |= {"base_ratio": br, "cur_ratio": cr, "R": cr / br, "ci_low": lo, "ci_high": hi}
        sizes = "/".join(f"{len(s)}x{min(len(a) for a in s)}" for s in (xb, rb, xc, rc))
        row |= {"n_samples": sizes, "verdict": verdict, "detail": detail}
        rows.append(row)
        logs.setdefault((key[0], key[2], ref, thr), []).append((np.log(cr / br), np.log(reps)))
    for (impl, dtype, ref, thr), items in sorted(logs.items()):
        point = float(np.exp(np.mean([p for p, _ in items])))
        lo, hi = _ci(np.exp(np.mean([r for _, r in items], axis=0)), cfg)
        verdict, detail = _verdict(lo, hi, thr, ref)
        rows.append(
            {"impl": impl, "model": "ALL", "dtype": dtype, "phase": "ALL", "batch_size": None, "ref": ref}
            | {"threshold": thr, "R": point, "ci_low": lo, "ci_high": hi, "n_samples": f"{len(items)} cases"}
            | {"verdict": verdict, "detail": ("geometric mean: " + detail) if detail else "geometric mean"}
        )
    gone = sorted((k for k in sb if k not in sc and k[0] != PEAK_REF), key=lambda k: tuple(str(x) for x in k))
    for key in gone:
        rows.append(dict(zip(SPEED_CASE, key, strict=True)) | {"verdict": NOTE, "detail": "not measured in current"})
    return pd.DataFrame(rows)


def check_agreement(cur: dict[str, pd.DataFrame]) -> pd.DataFrame:
    rows = []
    agr = cur.get("agreement")
    if agr is not None and not agr.empty:
        a = agr.copy()
        a["max_rel"] = pd.to_numeric(a["max_rel"], errors="coerce")
        a["bad"] = ~a["ok"].map(lambda v: v is not None and not (isinstance(v, float) and math.isnan(v)) and bool(v))
        for (impl, model, dtype), g in a.groupby(["impl", "model", "dtype"], dropna=False, sort=True):
            bad = g[g["bad"]]
            worst = g.loc[g["max_rel"].idxmax()] if g["max_rel"].notna().any() else None
            detail = ""
            if len(bad):
                first = bad.iloc[0]
                detail = f"{len(bad)} tensor(s) out of tolerance, e.g. {first['phase']}:{first['tensor']} "
                detail += f"rel {first['max_rel']:.3g} > tol {first['tol']}"
                fdl = next(iter(g["first_divergent_layer"].dropna()), None)
                detail += f"; first divergent layer {int(fdl)}" if fdl is not None else ""
            rows.append(
                {
                    "impl": impl,
                    "model": model,
                    "dtype": dtype,
                    "tensors": len(g),
                    "worst_rel": None if worst is None else worst["max_rel"],
                    "worst_tensor": None if worst is None else f"{worst['phase']}:{worst['tensor']}",
                    "verdict": FAIL if len(bad) else OK,
                    "detail": detail,
                }
            )
    err = cur.get("error")
    if err is not None and not err.empty:
        for _, e in err[err["status"] == "disagrees"].iterrows():
            rows.append(
                {
                    "impl": e["impl"],
                    "model": e["model"],
                    "dtype": e["dtype"],
                    "verdict": FAIL,
                    "detail": str(e["error"]),
                }
            )
    return pd.DataFrame(rows)


def _availability(frames: dict[str, pd.DataFrame]) -> dict[str, tuple[bool, str]]:
    av = frames.get("availability")
    if av is None or av.empty:
        return {}
    last = av.drop_duplicates(["impl"], keep="last")
    return {str(r["impl"]): (bool(r["available"]), str(r["reason"] or "")) for _, r in last.iterrows()}


def _impls(frames: dict[str, pd.DataFrame]) -> set[str]:
    return {str(i) for df in frames.values() for i in df["impl"].dropna().unique()}


def required_impls() -> list[str]:
    """Backends this environment must run (``NNBENCH_REQUIRE``, as the tests read it)."""
    import os

    return [n.strip() for n in os.environ.get("NNBENCH_REQUIRE", "").split(",") if n.strip()]


def check_status(
    base: dict[str, pd.DataFrame], cur: dict[str, pd.DataFrame], required: list[str] | None = None
) -> pd.DataFrame:
    """Availability and crash rules (2. and 7. in the module docstring)."""
    rows = []
    ab, ac = _availability(base), _availability(cur)
    ib, ic = _impls(base), _impls(cur)
    for impl in required or ():
        if impl in ac and not ac[impl][0]:
            rows.append({"impl": impl, "verdict": FAIL, "detail": f"required (NNBENCH_REQUIRE) but unavailable: "
                         f"{ac[impl][1]}"})  # fmt: skip
    for impl in sorted(ib | ic):
        b_ok = ab.get(impl, (impl in ib, ""))[0]
        if impl not in ic:
            rows.append({"impl": impl, "verdict": NOTE, "detail": "in baseline, not run in current"})
        elif impl not in ib:
            rows.append({"impl": impl, "verdict": NOTE, "detail": "new in current (no baseline)"})
        elif b_ok and impl in ac and not ac[impl][0] and impl not in (required or ()):
            rows.append({"impl": impl, "verdict": WARN, "detail": f"available in baseline, skipped now: {ac[impl][1]}"})
    keys = ["impl", "model", "phase", "status"]
    eb = _last(base.get("error"), keys)
    known = {tuple(r) for r in eb[keys].astype(str).itertuples(index=False)} if len(eb) else set()
    ec = _last(cur.get("error"), keys)
    for _, e in ec.iterrows():
        if e["status"] not in CRASH_STATUSES:
            if e["status"] != "disagrees":
                rows.append(_err_row(e, NOTE, ""))
            continue
        k = tuple(str(e[x]) for x in keys)
        rows.append(_err_row(e, WARN, "same failure in baseline") if k in known else _err_row(e, FAIL, "new failure"))
    return pd.DataFrame(rows)


def _err_row(e: pd.Series, verdict: str, why: str) -> dict[str, Any]:
    text = str(e["error"] or "").strip().splitlines()
    msg = text[-1][:200] if text else ""
    return {
        "impl": e["impl"],
        "model": e["model"],
        "phase": e["phase"],
        "verdict": verdict,
        "detail": f"{e['status']}: {msg}" + (f" ({why})" if why else ""),
    }


def _final_acc(df: pd.DataFrame) -> pd.DataFrame:
    cols = ["impl", "model", "dtype", "seed", "epoch", "test_acc", "test_samples", "train_samples", "steps"]
    a = df[cols].copy()
    for c in cols[4:]:
        a[c] = pd.to_numeric(a[c], errors="coerce")
    a["seed"] = a["seed"].fillna(0)
    return a.drop_duplicates(cols[:5], keep="last")


def check_accuracy(base: dict[str, pd.DataFrame], cur: dict[str, pd.DataFrame], cfg: GateConfig) -> pd.DataFrame:
    """Rule 3, per (impl, model, dtype) at the last epoch both runs reached."""
    if base.get("accuracy") is None or cur.get("accuracy") is None:
        return pd.DataFrame()
    keys = ["impl", "model", "dtype"]
    b, c = _final_acc(base["accuracy"]), _final_acc(cur["accuracy"])
    both = b.merge(c, on=keys + ["seed", "epoch"], suffixes=("_b", "_c"))
    both = both[both["epoch"] == both.groupby(keys, dropna=False)["epoch"].transform("max")]
    rows = []
    for key, at in both.groupby(keys, dropna=False, sort=True):
        p, q = float(at["test_acc_b"].mean()), float(at["test_acc_c"].mean())
        n = at["test_samples_c"].fillna(at["test_samples_b"]).fillna(cfg.default_test_samples).min()
        tol = cfg.acc_sigmas * math.sqrt(2.0 * max(p * (1.0 - p), 0.0) / float(n)) + cfg.acc_floor
        row: dict[str, Any] = dict(zip(keys, key, strict=True)) | {"epoch": int(at["epoch"].iloc[0])}
        row |= {"seeds": len(at), "n_test": int(n), "base_acc": p, "cur_acc": q, "tol": tol, "band_low": p - tol}
        budget = [x for x in ("train_samples", "steps") if (at[f"{x}_b"].fillna(-1) != at[f"{x}_c"].fillna(-1)).any()]
        chance = 1.0 / cfg.classes
        chance_high = chance + cfg.acc_sigmas * math.sqrt(chance * (1.0 - chance) / float(n))
        if p - tol <= chance_high:
            row |= {"verdict": NOTE, "detail": f"not gated: baseline at chance (band low {p - tol:.3f} <= "
                    f"{chance_high:.3f}, what a model at chance scores; a collapse could not fail it)"}  # fmt: skip
        elif math.isnan(q) or q < p - tol:
            row |= {
                "verdict": FAIL,
                "detail": "diverged (NaN)" if math.isnan(q) else f"below band by {p - tol - q:.4f}",
            }
        elif budget:
            row |= {"verdict": WARN, "detail": f"different training budget ({', '.join(budget)}): not comparable"}
        else:
            row |= {"verdict": OK, "detail": ""}
        rows.append(row)
    done = set(map(tuple, both[keys].astype(str).drop_duplicates().values.tolist()))
    for key in b[keys].astype(str).drop_duplicates().itertuples(index=False):
        if tuple(key) not in done:
            rows.append(dict(zip(keys, key, strict=True)) | {"verdict": NOTE, "detail": "no common (seed, epoch)"})
    return pd.DataFrame(rows)


def compare_frames(
    base: dict[str, pd.DataFrame], cur: dict[str, pd.DataFrame], cfg: GateConfig = GateConfig()
) -> dict[str, pd.DataFrame]:
    """All checks; each table has ``verdict`` (FAIL | WARN | ok | note) and ``detail``."""
    return {
        "status": check_status(base, cur, required_impls()),
        "agreement": check_agreement(cur),
        "accuracy": check_accuracy(base, cur, cfg),
        "speed": check_speed(base, cur, cfg),
    }


def compared_nothing(tables: dict[str, pd.DataFrame]) -> bool:
    """No speed case and no accuracy row was judged in both runs (the baseline's
    implementations or models were not run): such a gate cannot PASS."""
    judged = (OK, FAIL, WARN, INCONCLUSIVE)
    return not any(len(tables.get(k, ())) and tables[k]["verdict"].isin(judged).any() for k in ("speed", "accuracy"))


def failed(tables: dict[str, pd.DataFrame]) -> bool:
    return compared_nothing(tables) or any(len(t) and (t["verdict"] == FAIL).any() for t in tables.values())


def inconclusive(tables: dict[str, pd.DataFrame]) -> int:
    """How many rows could not be decided (too noisy): the run should be repeated."""
    return sum(int((t["verdict"] == INCONCLUSIVE).sum()) for t in tables.values() if len(t))


def speed_only_failures(baseline: str, current: str) -> dict[str, set[str]] | None:
    """``{impl: {models}}`` whose speed rows fail, when speed is the only failing check;
    ``None`` when another check fails too (those are not re-measured). A failing aggregate
    row (model ``ALL``) names every model the implementation was measured on."""
    base, cur = _load("baseline", baseline), _load("current", current)
    tables = compare_frames(base, cur)
    if any(len(t) and (t["verdict"] == FAIL).any() for k, t in tables.items() if k != "speed"):
        return None
    sp = tables["speed"]
    out: dict[str, set[str]] = {}
    for _, row in sp[sp["verdict"] == FAIL].iterrows() if len(sp) else []:
        models = set(sp[(sp["impl"] == row["impl"]) & (sp["model"] != "ALL")]["model"])
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


def _known_impls(frames: list[dict[str, pd.DataFrame]]) -> set[str]:
    try:
        import implementations

        names = set(implementations.names())
    except Exception:
        names = set()
    return names | {i for f in frames for i in _impls(f)}


def _known_models(frames: list[dict[str, pd.DataFrame]]) -> set[str]:
    from bench.spec import preset_names

    return set(preset_names()) | {str(m) for f in frames for df in f.values() for m in df["model"].dropna().unique()}


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


def _show(v: Any, f: str | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if f:
        return f.format(v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


# what each table shows on a terminal (100 columns); --wide prints every column
TERMINAL_COLUMNS = {
    "status": ["impl", "model", "phase", "verdict"],
    "agreement": ["impl", "model", "dtype", "tensors", "worst_rel", "verdict"],
    "accuracy": ["impl", "model", "dtype", "epoch", "base_acc", "cur_acc", "band_low", "verdict"],
    "speed": ["impl", "model", "dtype", "phase", "batch_size", "ref", "R", "ci_low", "ci_high", "verdict"],
}
WIDTH = 100


def _print_tables(tables: dict[str, pd.DataFrame], out: Any, wide: bool = False) -> None:
    """Every table as aligned text. On a terminal (default) the compact columns fit ``WIDTH``
    and each row's ``detail`` follows the table as wrapped lines (never cut); ``wide``: every
    column, ``detail`` last."""
    import textwrap

    fmt = {"R": "{:.3f}", "ci_low": "{:.3f}", "ci_high": "{:.3f}", "base_ratio": "{:.4g}", "cur_ratio": "{:.4g}"}
    fmt |= {"base_acc": "{:.4f}", "cur_acc": "{:.4f}", "tol": "{:.4f}", "band_low": "{:.4f}", "worst_rel": "{:.2e}"}
    for name, t in tables.items():
        print(f"\n== {name} ==", file=out)
        if t is None or t.empty:
            print("(nothing to compare)", file=out)
            continue
        cols = [c for c in t.columns if c != "detail"] + (["detail"] if wide and "detail" in t.columns else [])
        if not wide and name in TERMINAL_COLUMNS:
            cols = [c for c in TERMINAL_COLUMNS[name] if c in t.columns]
        shown = pd.DataFrame({c: [_show(v, fmt.get(c)) for v in t[c]] for c in cols})
        shown = shown.rename(columns={"batch_size": "batch"})
        widths = [max([len(c), *map(len, shown[c])]) for c in shown.columns]
        for row in [list(shown.columns), *shown.itertuples(index=False)]:
            print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(), file=out)
        if wide or "detail" not in t.columns:
            continue
        for r in t.to_dict("records"):
            if r.get("detail") and isinstance(r["detail"], str):
                who = " ".join(str(r[k]) for k in ("impl", "model", "dtype", "phase") if k in r and _show(r[k], None))
                print(textwrap.fill(f"{who}: {r['detail']}", WIDTH, initial_indent="  - ", subsequent_indent="    "),
                      file=out)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench compare", description=__doc__.split("\n\n")[0])
    ap.add_argument("baseline", help="baseline run dir (e.g. bench/baselines/quick)")
    ap.add_argument("current", help="current run dir (e.g. runs/latest)")
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
    args = ap.parse_args(argv)
    cfg = GateConfig(
        threshold=args.threshold,
        peak_threshold=args.peak_threshold,
        ci=args.ci,
        n_boot=args.bootstrap,
        acc_sigmas=args.acc_sigmas,
        acc_floor=args.acc_floor,
    )
    impls = [s.strip() for s in args.impls.split(",") if s.strip()] if args.impls else None
    models = [s.strip() for s in args.models.split(",") if s.strip()] if args.models else None
    try:
        base, cur = _load("baseline", args.baseline), _load("current", args.current)
        _validate_names("implementation", impls, _known_impls([base, cur]))
        _validate_names("model", models, _known_models([base, cur]))
    except BadInput as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    base, cur = _filter(base, impls, models), _filter(cur, impls, models)
    tables = compare_frames(base, cur, cfg)
    for label, path in (("baseline", args.baseline), ("current", args.current)):
        meta = read_run_meta(resolve_run_dir(path))
        profile = meta.get("profile", "?")
        profile = profile.get("name", "?") if isinstance(profile, dict) else profile
        print(f"{label}: {path} (run {meta.get('run_id', '?')}, profile {profile})")
        if meta.get("injected_slowdown"):
            print(f"  {label} has an injected slowdown (gate validation): {meta['injected_slowdown']}")
    _print_tables(tables, sys.stdout, args.wide)
    print("\n" + verdict_line(tables, args.label))
    return 1 if failed(tables) else 0


def verdict_line(tables: dict[str, pd.DataFrame], label: str = "RESULT") -> str:
    """The one line that states the gate's verdict, with what it could not decide."""
    n_fail = sum(int((t["verdict"] == FAIL).sum()) for t in tables.values() if len(t))
    n_inc = inconclusive(tables)
    if compared_nothing(tables):
        return f"{label}: FAIL (the gate compared nothing: no speed case or accuracy row in both runs)"
    text = f"{label}: {'FAIL' if failed(tables) else 'PASS'} ({n_fail} failing"
    text += f", {n_inc} inconclusive: too noisy, repeat the run to decide them" if n_inc else ""
    return text + "; rules: bench/compare.py)"


if __name__ == "__main__":
    raise SystemExit(main())
