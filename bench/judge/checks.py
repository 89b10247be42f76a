"""The gate's checks other than speed (rules 1-3 and 7 of ``bench.judge.compare``): agreement,
availability and crashes, accuracy. Each returns a table with ``verdict`` and ``detail``."""

from __future__ import annotations

import math
import os
from typing import Any

import pandas as pd

from bench.judge.speed import CRASH_STATUSES, FAIL, NOTE, OK, WARN, GateConfig, _last


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
    return [n.strip() for n in os.environ.get("NNBENCH_REQUIRE", "").split(",") if n.strip()]


def check_status(
    base: dict[str, pd.DataFrame],
    cur: dict[str, pd.DataFrame],
    required: list[str] | None = None,
    names: tuple[str, str] = ("baseline", "current"),
) -> pd.DataFrame:
    """Availability and crash rules (2. and 7. in the module docstring); ``names``: what BASE and
    CURRENT are called in the details (an A/B run: REF and the working tree)."""
    nb, nc = names
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
            rows.append({"impl": impl, "verdict": NOTE, "detail": f"in {nb}, not run in {nc}"})
        elif impl not in ib:
            rows.append({"impl": impl, "verdict": NOTE, "detail": f"new in {nc} (none in {nb}: not gated)"})
        elif b_ok and impl in ac and not ac[impl][0] and impl not in (required or ()):
            rows.append({"impl": impl, "verdict": WARN, "detail": f"available in {nb}, skipped now: {ac[impl][1]}"})
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
        rows.append(_err_row(e, WARN, f"same failure in {nb}") if k in known else _err_row(e, FAIL, "new failure"))
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
    base_keys = set(map(tuple, b[keys].astype(str).drop_duplicates().values.tolist()))
    for key in c[keys].astype(str).drop_duplicates().itertuples(index=False):
        if tuple(key) not in base_keys:  # e.g. an A/B run's REF side, which measures speed alone for it
            rows.append(
                dict(zip(keys, key, strict=True)) | {"verdict": NOTE, "detail": "not gated: no baseline figure"}
            )
    return pd.DataFrame(rows)
