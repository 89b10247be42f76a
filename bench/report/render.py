"""Formatting the reports share (the run's ``bench.report.run_report``, ``bench.report.history``,
``bench.report.side_by_side``, ``bench.report.recipes``): cells, row order, Markdown and HTML tables,
figures as data URIs (the pages' skeleton and CSS: ``bench.report.page``)."""

from __future__ import annotations

import base64
import io
import math
import re
from typing import Any

import numpy as np
import pandas as pd

from bench.plan.sides import ref_name

PATH = re.compile(r"(?<![\w.:/])(?:/[\w.+@-]+){2,}/?")  # an absolute path of the machine that wrote it


def short_path(text: str) -> str:
    """Absolute paths cut to their last two parts (``…/py/bin``): a report names no folder of
    the machine that wrote it."""
    return PATH.sub(lambda m: "…/" + "/".join(m.group(0).rstrip("/").split("/")[-2:]), text)


def fmt(v: Any) -> str:
    """A cell as text a person reads: empty for missing, ✓ / ✗ for booleans, 4 significant
    digits, a list as its values (or its length past 6), a dict as ``key: value`` pairs, absolute
    paths shortened (``short_path``); never Python's ``None``, ``nan``, ``True`` or ``{}``."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "✓" if v else "✗"
    if isinstance(v, (float, np.floating)):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple, np.ndarray)):
        v = list(v)
        return ", ".join(fmt(x) for x in v) if len(v) <= 6 else f"{len(v)} values"
    if isinstance(v, dict):
        return "; ".join(f"{k}: {fmt(x)}" for k, x in v.items()) if v else ""
    text = short_path(str(v))
    if text in ("True", "true", "False", "false"):  # a boolean stored as text (JSON, CSV)
        return "✓" if text[0] in "Tt" else "✗"
    return "" if text in ("None", "null", "nan", "NaN", "<NA>", "NaT", "{}", "[]") else text


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


def png_uri(fig: Any) -> str:
    """A matplotlib figure as a base64 PNG data URI (closed afterwards)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
