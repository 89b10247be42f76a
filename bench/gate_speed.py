"""The speed rule of the regression gate (rule 4 of ``bench.compare``): per case, the ratio of
the in-run ratios ``R = r_cur / r_base`` and its bootstrap interval, then one verdict.

What a case's figure is (``center``), how its interval is drawn (``_Boot``) and where the
threshold sits (``GateConfig``) are documented at each; the measurements behind the defaults
are in ``bench/compare.py``'s docstring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

FAIL, WARN, OK, NOTE = "FAIL", "WARN", "ok", "note"
INCONCLUSIVE = "inconclusive"  # the interval straddles the threshold: neither ok nor FAIL; re-measure
CRASH_STATUSES = ("crash", "timeout", "oom", "not_implemented")
SPEED_CASE = ["impl", "model", "dtype", "phase", "batch_size"]
REFERENCE = "numpy"
PEAK_REF = "gemm"


@dataclass(frozen=True)
class GateConfig:
    threshold: float = 1.25  # a slowdown the gate must rule out (ok) or establish (FAIL)
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
    min_sd_n: int = 4  # deviations below which an implementation borrows the others' spread
    default_sd: float = 0.15  # when no implementation has enough: about what this machine kind shows


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
    """The figure a case is judged by: the median over processes of each process's median."""
    return float(np.median([np.median(a) for a in sets]))


# Variance of the median of P standard normal draws (exact for P <= 5; pi / 2P beyond).
_MEDIAN_VAR = {1: 1.0, 2: 0.5, 3: 0.4487, 4: 0.3433, 5: 0.2868}


# Median of |x - median(x)| over the non-median members of P standard normal draws (simulated,
# 200,000 sets each): turns the pooled deviations of P process figures into a standard deviation.
_MAD_C = {2: 0.4797, 3: 0.69, 4: 0.4851, 5: 0.6838, 6: 0.5263, 7: 0.6824, 8: 0.5626}


def process_sd(runs: list[dict[tuple, Samples]], cfg: GateConfig) -> dict[str, float]:
    """Per implementation (and the GEMM): the spread of ``log(process median)`` between the worker
    processes of one case, pooled over every case with >= 2 processes in ``runs``, as a robust
    standard deviation (median absolute deviation from the case's median, scaled by ``_MAD_C``).

    This is the noise the rounds of one process cannot show: on this machine kind a whole worker
    process runs 10-20 % faster or slower than its neighbours, independently per process, and now
    and then one runs 1.5-2x slow. The case's figure (a median of processes) ignores such an
    outlier, so the spread that matters is the ordinary processes' one; a plain standard
    deviation would be inflated by the outliers. An implementation with fewer than
    ``cfg.min_sd_n`` deviations (the GEMM: two measurements per run) borrows the largest
    estimate of the others, or ``cfg.default_sd``."""
    devs: dict[str, list[float]] = {}
    for sets in runs:
        for key, s in sets.items():
            if len(s) >= 2:
                logs = np.log([np.median(a) for a in s])
                d = np.sort(np.abs(logs - np.median(logs)))
                d = d[1:] if len(s) % 2 else d  # the median member itself deviates by 0
                devs.setdefault(key[0], []).extend(d / _MAD_C.get(len(s), 0.6745))
    known = {i: max(float(np.median(v)), cfg.min_sd) for i, v in devs.items() if len(v) >= cfg.min_sd_n}
    fallback = max(known.values(), default=cfg.default_sd)
    impls = {key[0] for sets in runs for key in sets}
    return {i: known.get(i, fallback) for i in impls}


class _Boot:
    """Bootstrap replicates of ``center`` with both sources of noise a run has:

    - within a process, its rounds are resampled (percentile bootstrap of each process's median);
    - between processes, the replicate is multiplied by ``exp(N(0, sd^2 v(P)))``, with ``sd`` the
      implementation's pooled process-to-process spread (``process_sd``) and ``v(P)`` the
      variance of a median of ``P`` draws. Resampling the 3 processes themselves cannot stand in
      for this: a bootstrap of 3 values spans the slowest to the fastest, and keeping them fixed
      (what this gate did before) left the interval blind to it: 2 of 12 real A/A pairs failed.

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
            per = np.median(np.stack([self._within(a) for a in sets]), axis=0)  # (n_boot,)
            self.cache[label, key] = per * self._process_term(label, key, len(sets))
        return self.cache[label, key]

    def _process_term(self, label: str, key: tuple, p: int) -> np.ndarray:
        """One draw per (run, implementation, model, dtype): the phases and batch sizes of a case
        are timed in the same worker processes, so they share those processes' factors."""
        group = (label, *key[:3], p)
        if group not in self.offsets:
            sd = self.sd.get(key[0], 0.0) * np.sqrt(_MEDIAN_VAR.get(p, np.pi / (2 * p)))
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


def _aggregates(items: list[tuple]) -> list[tuple[str, list[tuple]]]:
    """The aggregate rows of one implementation: all its cases (phase ``ALL``), then each phase
    with >= 2 cases (its models and batch sizes), so that a slowdown of train_step alone is not
    diluted by the phases it did not touch. A one-case phase is its case row already."""
    phases = sorted({item[0] for item in items})
    per_phase = [(p, [i for i in items if i[0] == p]) for p in phases] if len(phases) > 1 else []
    return [("ALL", items)] + [(p, g) for p, g in per_phase if len(g) >= 2]


def check_speed(base: dict[str, pd.DataFrame], cur: dict[str, pd.DataFrame], cfg: GateConfig) -> pd.DataFrame:
    """Rule 4: one row per case, then ``model == "ALL"`` rows per (impl, dtype): the geometric
    mean of R over all the implementation's cases (``phase == "ALL"``) and over each phase's
    (``_aggregates``), each with the bootstrap CI of the same replicates' geometric means."""
    sb, sc = _sample_sets(base), _sample_sets(cur)
    boot = _Boot(cfg, process_sd([sb, sc], cfg))
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
        br, cr = center(xb) / center(rb), center(xc) / center(rc)
        verdict, detail = _verdict(lo, hi, thr, ref)
        if verdict == FAIL and min(min(len(a) for a in s) for s in (xb, rb, xc, rc)) < cfg.min_rounds:
            verdict, detail = WARN, f"{detail} (fewer than {cfg.min_rounds} rounds: judged by the aggregate only)"
        row |= {"base_ratio": br, "cur_ratio": cr, "R": cr / br, "ci_low": lo, "ci_high": hi}
        sizes = "/".join(f"{len(s)}x{min(len(a) for a in s)}" for s in (xb, rb, xc, rc))
        row |= {"n_samples": sizes, "verdict": verdict, "detail": detail}
        rows.append(row)
        logs.setdefault((key[0], key[2], ref, thr), []).append((key[3], np.log(cr / br), np.log(reps)))
    for (impl, dtype, ref, thr), items in sorted(logs.items()):
        for phase, group in _aggregates(items):
            point = float(np.exp(np.mean([p for _, p, _ in group])))
            lo, hi = _ci(np.exp(np.mean([r for _, _, r in group], axis=0)), cfg)
            verdict, detail = _verdict(lo, hi, thr, ref)
            what = "geometric mean" if phase == "ALL" else f"geometric mean of {phase}"
            rows.append(
                {"impl": impl, "model": "ALL", "dtype": dtype, "phase": phase, "batch_size": None, "ref": ref}
                | {"threshold": thr, "R": point, "ci_low": lo, "ci_high": hi, "n_samples": f"{len(group)} cases"}
                | {"verdict": verdict, "detail": f"{what}: {detail}" if detail else what}
            )
    gone = sorted((k for k in sb if k not in sc and k[0] != PEAK_REF), key=lambda k: tuple(str(x) for x in k))
    for key in gone:
        rows.append(dict(zip(SPEED_CASE, key, strict=True)) | {"verdict": NOTE, "detail": "not measured in current"})
    return pd.DataFrame(rows)
