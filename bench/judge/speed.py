"""The speed rule of the regression gate (rule 4 of ``bench.judge.compare``): per case, the ratio of
the in-run ratios ``R = r_cur / r_base`` and its bootstrap interval, then one verdict.

What a case's figure is (``center``), how its interval is drawn (``_Boot``) and where the
threshold sits (``GateConfig``) are documented at each; the measurements behind the defaults
are in ``bench/judge/compare.py``'s docstring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

FAIL, WARN, OK, NOTE = "FAIL", "WARN", "ok", "note"
INCONCLUSIVE = "inconclusive"  # the interval straddles the threshold: neither ok nor FAIL; re-measure
# The detail of a note that is a judgement (faster beyond noise), not a row left ungated.
FASTER = "faster beyond noise; consider refreshing the baseline"
CRASH_STATUSES = ("crash", "timeout", "oom", "not_implemented")
SPEED_CASE = ["impl", "model", "dtype", "phase", "batch_size"]
REFERENCE = "numpy"
PEAK_REF = "gemm"
NOT_IN_BASELINE = "not in the baseline (not gated)"  # a case only the current run has
TWIN_REF = "REF"  # an A/B run: each case against its own twin on REF's side, in the same run


@dataclass(frozen=True)
class GateConfig:
    threshold: float = 1.25  # a slowdown the gate must rule out (ok) or establish (FAIL)
    # The rows of ``sharp_phases`` (``_phase_verdict``) fail from the geometric midpoint between no
    # change and the threshold (1.118 for 1.25) once the slowdown is beyond noise; None: sqrt.
    decision: float | None = None
    phase_min_processes: int = 2  # below this the process spread is assumed, not measured
    # Phases judged by ``_phase_verdict``; the others by ``_verdict``. torch's forward (2 ms for
    # the mlp), untouched, moved 13-18 % against numpy between two real quick runs minutes apart
    # (a plain one and one whose train_step alone was slowed) with every process agreeing: a
    # machine-state shift no within-run statistic sees. Judged by the phase rule it failed.
    sharp_phases: tuple[str, ...] = ("train_step",)
    peak_threshold: float = 1.25
    ci: float = 0.99
    n_boot: int = 2000
    seed: int = 0
    min_rounds: int = 5
    acc_sigmas: float = 4.0
    acc_floor: float = 0.005
    default_test_samples: int = 10000
    classes: int = 10  # MNIST: accuracy at chance is 1 / classes
    min_sd: float = 0.02  # floor of a pooled process-to-process spread (log units)
    min_sd_n: int = 2  # gaps (cases) below which an implementation borrows the others' spread
    default_sd: float = 0.15  # when no implementation has enough: about what this machine kind shows
    # An A/B run (``run --gate-ref``): BASE is REF's side of the same run, measured interleaved with
    # CURRENT on the same machine, so each case is compared with its twin directly (R = t_cur / t_ref)
    # instead of through an in-run reference: no reference noise, and NumPy is judged like the rest.
    direct: bool = False


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


def center(sets: Samples) -> float:
    """The figure a case is judged by: the fastest of its worker processes' medians.

    A worker process that runs through a neighbour's burst (on this machine kind, 10-60 % slow
    for tens of seconds) is slower, never faster, so the fastest process is the one nearest the
    undisturbed speed, the reasoning behind BenchmarkTools.jl's minimum-based ``judge``. Over 5
    real pinned quick runs (2026-11-23), the worst A/A ratio of a single case was 1.117 this
    way and 1.306 with the median of the process medians (two of numpy's three mlp forward
    processes slow in one run); the train_step phase rows' sd fell from 0.039 to 0.009. The
    reports keep the median of process medians with its spread: they describe, this judges."""
    return float(np.min([np.median(a) for a in sets]))


# Variance of the minimum of P standard normal draws (simulated, 400,000 sets each; a merged
# baseline has up to 16 processes per case, more borrow 16's).
_MIN_VAR = {
    1: 1.0, 2: 0.6823, 3: 0.5589, 4: 0.4921, 5: 0.4474, 6: 0.4165, 7: 0.392, 8: 0.3739,
    9: 0.3565, 10: 0.3453, 11: 0.3332, 12: 0.3239, 13: 0.3155, 14: 0.3068, 15: 0.3011, 16: 0.2937,
}  # fmt: skip


# Median gap between the two smallest of P standard normal draws (simulated, 400,000 sets each):
# turns the pooled gaps between a case's two fastest processes into a standard deviation.
_GAP_C = {
    2: 0.9566, 3: 0.6884, 4: 0.5858, 5: 0.5262, 6: 0.4896, 7: 0.4632, 8: 0.4441, 9: 0.4249,
    10: 0.4134, 11: 0.4022, 12: 0.3932, 13: 0.3841, 14: 0.3788, 15: 0.3722, 16: 0.3663,
}  # fmt: skip


def process_sd(runs: list[dict[tuple, Samples]], cfg: GateConfig) -> dict[str, float]:
    """Per implementation (and the GEMM): the spread of ``log(process median)`` between the worker
    processes of one case, where ``center`` looks: the gap between the two fastest processes,
    pooled (median) over every case with >= 2 processes in ``runs`` and scaled by ``_GAP_C`` to
    a standard deviation.

    This is the noise the rounds of one process cannot show: on this machine kind a whole worker
    process runs a few percent (pinned) to 10-20 % (2 unpinned threads) faster or slower than
    its neighbours, and now and then one or two of a case's processes run 1.1-2x slow. The
    case's figure (the fastest process) ignores those, so the spread that matters is the
    undisturbed processes' one. A deviation from the median of the processes (what this used to
    pool) counts a slow process in; with 3 processes and one of them slow it doubled the spread
    and left a real 1.27x slowdown "inconclusive". An implementation with fewer than
    ``cfg.min_sd_n`` gaps (the GEMM: two measurements per run) borrows the largest estimate of
    the others, or ``cfg.default_sd``."""
    gaps: dict[str, list[float]] = {}
    for sets in runs:
        for key, s in sets.items():
            if len(s) >= 2:
                logs = np.sort(np.log([np.median(a) for a in s]))
                gaps.setdefault(key[0], []).append((logs[1] - logs[0]) / _GAP_C.get(len(s), _GAP_C[16]))
    known = {i: max(float(np.median(v)), cfg.min_sd) for i, v in gaps.items() if len(v) >= cfg.min_sd_n}
    fallback = max(known.values(), default=cfg.default_sd)
    impls = {key[0] for sets in runs for key in sets}
    return {i: known.get(i, fallback) for i in impls}


class _Boot:
    """Bootstrap replicates of ``center`` with both sources of noise a run has:

    - within a process, its rounds are resampled (percentile bootstrap of each process's median);
    - between processes, the replicate is multiplied by ``exp(N(0, sd^2 v(P)))``, with ``sd`` the
      implementation's pooled process-to-process spread (``process_sd``) and ``v(P)`` the
      variance of the minimum of ``P`` draws (``center`` takes the fastest process). Resampling
      the 3 processes themselves cannot stand in for this: a bootstrap of 3 values spans the
      slowest to the fastest, and keeping them fixed (what this gate did before) left the
      interval blind to it: 2 of 12 real A/A pairs failed.

    Each set is drawn once per label, so a set shared by several cases (the numpy reference, the
    GEMM) is resampled consistently; the process term is drawn once per worker-process group
    (``_process_term``)."""

    def __init__(self, cfg: GateConfig, sd: dict[str, float] | None = None) -> None:
        self.cfg, self.sd, self.rng = cfg, sd or {}, np.random.default_rng(cfg.seed)
        self.cache: dict[tuple, np.ndarray] = {}
        self.offsets: dict[tuple, np.ndarray] = {}

    def _within(self, a: np.ndarray) -> np.ndarray:
        if len(a) == 1:
            return np.full(self.cfg.n_boot, a[0])
        idx = self.rng.integers(0, len(a), size=(self.cfg.n_boot, len(a)))
        return np.median(a[idx], axis=1)

    def __call__(self, label: str, key: tuple, sets: Samples) -> np.ndarray:
        if (label, key) not in self.cache:
            per = np.min(np.stack([self._within(a) for a in sets]), axis=0)  # (n_boot,): ``center``
            self.cache[label, key] = per * self._process_term(label, key, len(sets))
        return self.cache[label, key]

    def _process_term(self, label: str, key: tuple, p: int) -> np.ndarray:
        """One draw per (run, implementation, model, dtype): the phases and batch sizes of a case
        are timed in the same worker processes, so they share those processes' factors."""
        group = (label, *key[:3], p)
        if group not in self.offsets:
            sd = self.sd.get(key[0], 0.0) * np.sqrt(_MIN_VAR.get(p, _MIN_VAR[16]))
            self.offsets[group] = np.exp(self.rng.normal(0.0, sd, self.cfg.n_boot))
        return self.offsets[group]


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
        return NOTE, FASTER
    if hi > thr:
        return INCONCLUSIVE, f"too noisy to decide: CI [{lo:.3f}, {hi:.3f}] contains {thr}; re-measure"
    return OK, ""


def _phase_verdict(
    point: float, lo: float, hi: float, thr: float, decision: float, ref: str, first: float | None = None
) -> tuple[str, str]:
    """The rule of an implementation's rows of ``GateConfig.sharp_phases`` (train_step over its
    models and batch sizes), where the gate must catch a ``thr`` slowdown:

    - FAIL when the slowdown is beyond noise (``CI_low > 1``) and nearer ``thr`` than no change
      (``R >= decision``, the geometric midpoint);
    - FAIL as *reproduced* when ``first`` (the same row's R in the first measurement of the same
      code, ``run --gate``'s confirmation) and ``R`` both reach ``decision``: two independent
      measurements past the midpoint, where one interval alone could not decide;
    - inconclusive, a *suspect* that ``run --gate`` re-measures, when ``R >= decision`` without
      ``CI_low > 1``;
    - ok when a ``thr`` slowdown is ruled out (``CI_high <= thr``); otherwise inconclusive.

    ``_verdict`` (the whole interval above ``thr``) would catch a true ``thr`` slowdown less than
    half the time, whatever the noise. Why the interval alone is not enough: its process term
    (``process_sd``) assumes normal process-to-process noise, and on this machine kind the noise
    is one-sided (a disturbed process is slower, never faster), so in a noisy minute the gap
    between a case's two fastest processes overstates the spread of the fastest one up to 4.7x
    (bench/judge/compare.py, rule 4)."""
    if point >= decision and (lo > 1.0 or (first is not None and first >= decision)):
        why = f"CI low {lo:.3f} > 1" if lo > 1.0 else f"reproduced: R {first:.3f} in the first measurement"
        return FAIL, f"slower relative to {ref}: R {point:.3f} >= {decision:.3f} and {why}"
    if point >= decision:
        return INCONCLUSIVE, (
            f"suspect: R {point:.3f} >= {decision:.3f} but CI [{lo:.3f}, {hi:.3f}] not beyond noise; "
            "run --gate re-measures it and fails it if it reproduces"
        )
    if hi < 1.0 / thr:
        return NOTE, FASTER
    if hi > thr:
        return INCONCLUSIVE, f"too noisy to decide: CI [{lo:.3f}, {hi:.3f}] contains {thr}; re-measure"
    return OK, f"R {point:.3f} is beyond noise but below {decision:.3f}" if lo > 1.0 else ""


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


def _ratio(boot: _Boot, label: str, key: tuple, x: Samples, rk: tuple | None, r: Samples | None) -> np.ndarray:
    """Bootstrap replicates of a case's figure over its in-run reference's (itself when ``rk`` is
    None: an A/B run compares twins directly)."""
    return boot(label, key, x) / boot(label, rk, r) if rk is not None and r is not None else boot(label, key, x)


def _aggregates(items: list[tuple]) -> list[tuple[str, list[tuple]]]:
    """The aggregate rows of one implementation: all its cases (phase ``ALL``), then each phase
    (its models and batch sizes), so that a slowdown of train_step alone is not diluted by the
    phases it did not touch. A one-case phase gets its row too: the rows of
    ``GateConfig.sharp_phases`` are the ones judged by ``_phase_verdict``."""
    phases = sorted({item[0] for item in items})
    return [("ALL", items)] + [(p, [i for i in items if i[0] == p]) for p in phases]


def check_speed(
    base: dict[str, pd.DataFrame],
    cur: dict[str, pd.DataFrame],
    cfg: GateConfig,
    first: dict[tuple[str, str, str], float] | None = None,
) -> pd.DataFrame:
    """Rule 4: one row per case, then ``model == "ALL"`` rows per (impl, dtype): the geometric
    mean of R over all the implementation's cases (``phase == "ALL"``) and over each phase's
    (``_aggregates``), each with the bootstrap CI of the same replicates' geometric means.

    ``first``: when CURRENT is a confirmation run, the first measurement's R of each sharp-phase
    row, ``{(impl, dtype, phase): R}`` (``sharp_rows``), for ``_phase_verdict``'s reproduction."""
    sb, sc = _sample_sets(base), _sample_sets(cur)
    boot = _Boot(cfg, process_sd([sb, sc], cfg))
    rows, logs = [], {}
    cases = sorted((k for k in sb if k in sc and k[0] != PEAK_REF), key=lambda k: tuple(str(x) for x in k))
    for key in cases:
        rk = None if cfg.direct else _ref_key(key, sb, sc)
        ref, thr = (PEAK_REF, cfg.peak_threshold) if rk and rk[0] == PEAK_REF else (REFERENCE, cfg.threshold)
        ref = TWIN_REF if rk is None else ref
        row: dict[str, Any] = dict(zip(SPEED_CASE, key, strict=True)) | {"ref": ref, "threshold": thr}
        if rk is not None and (rk not in sb or rk not in sc):
            rows.append(row | {"verdict": NOTE, "detail": f"no in-run {ref} reference"})
            continue
        xb, xc = sb[key], sc[key]
        rb, rc = (sb[rk], sc[rk]) if rk is not None else (None, None)
        reps = _ratio(boot, "c", key, xc, rk, rc) / _ratio(boot, "b", key, xb, rk, rb)
        lo, hi = _ci(reps, cfg)
        br = center(xb) / center(rb) if rb is not None else center(xb)
        cr = center(xc) / center(rc) if rc is not None else center(xc)
        verdict, detail = _verdict(lo, hi, thr, ref)
        sets = [x for x in (xb, rb, xc, rc) if x is not None]
        if verdict == FAIL and min(min(len(a) for a in s) for s in sets) < cfg.min_rounds:
            verdict, detail = WARN, f"{detail} (fewer than {cfg.min_rounds} rounds: judged by the aggregate only)"
        row |= {"base_ratio": br, "cur_ratio": cr, "R": cr / br, "ci_low": lo, "ci_high": hi}
        sizes = "/".join(f"{len(s)}x{min(len(a) for a in s)}" for s in sets)
        row |= {"n_samples": sizes, "verdict": verdict, "detail": detail}
        rows.append(row)
        measured = min(len(x) for x in sets) >= cfg.phase_min_processes and ref in (REFERENCE, TWIN_REF)
        logs.setdefault((key[0], key[2], ref, thr), []).append((key[3], np.log(cr / br), np.log(reps), measured))
    decision = cfg.decision or float(np.sqrt(cfg.threshold))
    for (impl, dtype, ref, thr), items in sorted(logs.items()):
        for phase, group in _aggregates(items):
            point = float(np.exp(np.mean([p for _, p, _, _ in group])))
            lo, hi = _ci(np.exp(np.mean([r for _, _, r, _ in group], axis=0)), cfg)
            suspect = False
            if phase in cfg.sharp_phases and all(m for *_, m in group):
                before = (first or {}).get((impl, dtype, phase))
                verdict, detail = _phase_verdict(point, lo, hi, thr, decision, ref, before)
                suspect = verdict == INCONCLUSIVE and point >= decision  # run --gate re-measures it
            else:
                verdict, detail = _verdict(lo, hi, thr, ref)
            what = "geometric mean" if phase == "ALL" else f"geometric mean of {phase}"
            rows.append(
                {"impl": impl, "model": "ALL", "dtype": dtype, "phase": phase, "batch_size": None, "ref": ref}
                | {"threshold": thr, "R": point, "ci_low": lo, "ci_high": hi, "n_samples": f"{len(group)} cases"}
                | {"verdict": verdict, "detail": f"{what}: {detail}" if detail else what, "suspect": suspect}
            )
    gone = sorted((k for k in sb if k not in sc and k[0] != PEAK_REF), key=lambda k: tuple(str(x) for x in k))
    for key in gone:
        rows.append(dict(zip(SPEED_CASE, key, strict=True)) | {"verdict": NOTE, "detail": "not measured in current"})
    new = sorted((k for k in sc if k not in sb and k[0] != PEAK_REF), key=lambda k: tuple(str(x) for x in k))
    for key in new:  # e.g. a backend the baseline predates: said, not silently left out
        rows.append(dict(zip(SPEED_CASE, key, strict=True)) | {"verdict": NOTE, "detail": NOT_IN_BASELINE})
    return with_limits(pd.DataFrame(rows), cur.get("speed"))


def with_limits(table: pd.DataFrame, speed: pd.DataFrame | None) -> pd.DataFrame:
    """``x_of_limit`` of the current run beside each row: a case's median over its records
    (``bench.measure.derived.roofline``: 1 = at the machine's limit), an ``ALL`` row's geometric
    mean over its cases. Not judged: it says how far each case is from what the machine allows."""
    table = table.assign(x_of_limit=np.nan)
    if speed is None or speed.empty or "x_of_limit" not in speed or table.empty:
        return table
    x = pd.to_numeric(speed["x_of_limit"], errors="coerce")
    med = speed.assign(x=x).dropna(subset=["x"]).groupby(SPEED_CASE, dropna=False)["x"].median()
    case = table["model"] != "ALL"
    keys = list(table.loc[case, SPEED_CASE].itertuples(index=False, name=None))
    table.loc[case, "x_of_limit"] = [med.get(k, np.nan) for k in keys]
    for i, r in table[~case].iterrows():
        g = table[case & (table["impl"] == r["impl"]) & (table["dtype"] == r["dtype"]) & (table["ref"] == r["ref"])]
        g = g if r["phase"] == "ALL" else g[g["phase"] == r["phase"]]
        v = pd.to_numeric(g["x_of_limit"], errors="coerce").dropna()
        table.loc[i, "x_of_limit"] = float(np.exp(np.log(v).mean())) if len(v) and (v > 0).all() else np.nan
    return table


def sharp_rows(table: pd.DataFrame, cfg: GateConfig) -> dict[tuple[str, str, str], float]:
    """``{(impl, dtype, phase): R}`` of the aggregate rows of ``cfg.sharp_phases`` in a
    ``check_speed`` table: what a confirmation run is compared with (``check_speed(first=...)``)."""
    if table.empty or "phase" not in table:
        return {}
    rows = table[(table["model"] == "ALL") & table["phase"].isin(cfg.sharp_phases) & table["R"].notna()]
    return {(r.impl, r.dtype, r.phase): float(r.R) for r in rows.itertuples()}
