"""The gate's tables as aligned text for a terminal (``python -m bench compare``)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd


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
    "speed": [
        "impl",
        "model",
        "dtype",
        "phase",
        "batch_size",
        "ref",
        "R",
        "ci_low",
        "ci_high",
        "x_of_limit",
        "verdict",
    ],
}
WIDTH = 100


def print_tables(tables: dict[str, pd.DataFrame], out: Any, wide: bool = False) -> None:
    """Every table as aligned text. On a terminal (default) the compact columns fit ``WIDTH``
    and each row's ``detail`` follows the table as wrapped lines (never cut); ``wide``: every
    column, ``detail`` last."""
    import textwrap

    fmt = {"R": "{:.3f}", "ci_low": "{:.3f}", "ci_high": "{:.3f}", "base_ratio": "{:.4g}", "cur_ratio": "{:.4g}"}
    fmt |= {"x_of_limit": "{:.2g}"}
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
        shown = shown.rename(columns={"batch_size": "batch", "x_of_limit": "x_lim"})
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
