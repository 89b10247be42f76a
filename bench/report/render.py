"""Formatting the reports share (the run's ``bench.report.run_report``, ``bench.report.history``,
``bench.report.side_by_side``, ``bench.report.recipes``): cells, row order, Markdown and HTML tables,
figures as data URIs, the pages' CSS."""

from __future__ import annotations

import base64
import io
import math
from typing import Any

import pandas as pd

from bench.plan.sides import ref_name

CSS = (
    "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;font-size:12px}"
    "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}th{background:#eee}"
    "img{max-width:100%}.note{color:#555}"
)


def fmt(v: Any) -> str:
    """A cell as text: empty for missing, yes/no, 4 significant digits, a list by its length."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return f"[{len(v)} values]"
    return str(v)


def cell(v: Any) -> Any:
    """``None`` for a missing value (None, NaN, NA), else the value."""
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return v


def bools(s: pd.Series) -> pd.Series:
    """Truthiness of a column that may hold bools, None or NaN (missing is False)."""
    return s.map(lambda v: False if cell(v) is None else bool(v)).astype(bool)


def impl_order(frames: dict[str, pd.DataFrame]) -> dict[str, int]:
    """Implementations in registry order, then any others the frames hold: ``{impl: rank}``."""
    try:
        from bench.plan import backends

        names = backends.names()
    except Exception:  # the report must not depend on the registry importing cleanly
        names = []
    seen = [n for name in names for n in (name, ref_name(name))]  # an A/B run: each with its REF twin
    for df in frames.values():
        seen += [i for i in df["impl"].dropna().unique() if i not in seen]
    return {n: i for i, n in enumerate(seen)}


def sort_rows(df: pd.DataFrame, keys: list[str], order: dict[str, int]) -> pd.DataFrame:
    """Rows sorted by ``keys`` (those present), ``impl`` in ``order``; stable."""
    keys = [k for k in keys if k in df.columns]
    if not keys:
        return df
    return df.sort_values(keys, key=lambda s: s.map(order) if s.name == "impl" else s, kind="stable")


def markdown_table(df: pd.DataFrame, max_chars: int = 300) -> str:
    """A GitHub Markdown table (no tabulate dependency); pipes and newlines escaped."""

    def esc(v: Any) -> str:
        s = fmt(cell(v)).replace("|", "\\|").replace("\n", " ")
        return s if len(s) <= max_chars else s[: max_chars - 1] + "…"

    head = "| " + " | ".join(esc(c) for c in df.columns) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(esc(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *rows])


def html_table(df: pd.DataFrame) -> str:
    """An HTML table of the cells as ``fmt`` writes them, escaped."""
    shown = df.map(lambda v: fmt(cell(v))) if len(df) else df
    return shown.to_html(index=False, escape=True, border=0)


def png_uri(fig: Any) -> str:
    """A matplotlib figure as a base64 PNG data URI (closed afterwards)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
