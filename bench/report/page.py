"""One stylesheet, one page skeleton and one colour per backend for every HTML page nnbench
writes (the run's report, recipes, history, side by side; the GPU run's is a run report).

A page is a title, a lead (the verdict and what the page is, on the first screen) and blocks,
each with an id: the skeleton writes a table of contents of the blocks (a sticky column on a wide
screen, a list above the content on a narrow one). Tables scroll inside their own box, never the
page; a table longer than ``FOLD_ROWS`` rows is folded in a ``<details>`` block that says how many
rows it holds. Numbers are right-aligned, each backend's name carries its colour. Self-contained:
CSS inline, figures as data URIs, no script, nothing fetched.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass

import pandas as pd

from bench.report.render import cell, fmt

FOLD_ROWS = 25  # a table with more rows is folded: its row count is shown, its body on a click

# One colour per backend, the same on every page and in every figure: Okabe & Ito's eight
# colour-blind-safe colours first, then Paul Tol's muted set. A backend's REF twin (``numpy@ref``)
# has its colour; a backend not listed here gets a fixed one from its name.
COLOURS = {
    "numpy": "#000000",
    "numba": "#E69F00",
    "keras": "#D55E00",
    "torch": "#0072B2",
    "torch-compile": "#56B4E9",
    "torch-cuda": "#332288",
    "jax": "#009E73",
    "jax-gpu": "#117733",
    "cupy": "#CC79A7",
    "pure_python": "#999933",
}
SPARE = ("#882255", "#44AA99", "#AA4499", "#88CCEE", "#DDCC77", "#661100", "#6699CC", "#888888")


def colour(impl: str) -> str:
    """The backend's colour (``COLOURS``); its REF twin shares it; others by a stable hash of the name."""
    base = str(impl).split("@", 1)[0]
    if base in COLOURS:
        return COLOURS[base]
    return SPARE[sum(base.encode()) % len(SPARE)]


CSS = """
:root{--fg:#1b1b1b;--muted:#555;--line:#d0d0d0;--head:#f0f0f0;--ok:#1a7f37;--bad:#b3261e}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);margin:0}
.wrap{display:grid;grid-template-columns:15rem minmax(0,1fr);gap:2rem;max-width:84rem;margin:0 auto;
padding:1rem 1.5rem}
nav.toc{position:sticky;top:0;align-self:start;max-height:100vh;overflow-y:auto;padding:1rem 0;
font-size:13px}
nav.toc ol{list-style:none;margin:0;padding:0}nav.toc li{margin:.15rem 0}
nav.toc li.l3{padding-left:1rem}nav.toc a{color:#0b57d0;text-decoration:none}
main{min-width:0}
h1{font-size:1.6rem;margin:.6rem 0}h2{font-size:1.25rem;margin:2rem 0 .5rem;border-bottom:1px solid var(--line)}
h3{font-size:1.05rem;margin:1.2rem 0 .4rem}
.lead{background:#f7f7f7;border-left:4px solid #0b57d0;padding:.6rem 1rem;margin:.5rem 0 1rem}
.verdict{font-size:1.1rem;font-weight:600}.pass{color:var(--ok)}.fail{color:var(--bad)}
.note{color:var(--muted);font-size:13px;max-width:60rem}
.scroll{overflow:auto;max-width:100%;max-height:36rem;border:1px solid var(--line);margin:.3rem 0 1rem}
table{border-collapse:collapse;font-size:13px}
th,td{border-bottom:1px solid var(--line);padding:3px 8px;text-align:left;vertical-align:top}
th{background:var(--head);position:sticky;top:0;white-space:nowrap}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.long{min-width:16rem;max-width:40rem}td.impl{white-space:nowrap}
.sw{display:inline-block;width:.8em;height:.8em;border-radius:2px;margin-right:.35em;vertical-align:-1px}
figure{margin:.5rem 0 1.5rem}figure img{max-width:100%;height:auto;border:1px solid var(--line)}
figcaption{color:var(--muted);font-size:13px}
details>summary{cursor:pointer;color:#0b57d0;margin:.3rem 0}
code{font-size:13px}
@media (max-width:60rem){.wrap{grid-template-columns:minmax(0,1fr);gap:0}
nav.toc{position:static;max-height:none;border-bottom:1px solid var(--line);padding:.5rem 0}
nav.toc li{display:inline;margin-right:.9em}nav.toc li.l3{display:none}}
"""


@dataclass
class Block:
    """One section of a page: ``body`` is HTML; ``level`` 2 or 3 (a sub-section)."""

    title: str
    body: str
    level: int = 2
    id: str = ""


def slug(text: str, taken: set[str]) -> str:
    """An id for ``text``, unique among ``taken`` (which it joins)."""
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    return name


def page(title: str, lead: str, blocks: list[Block]) -> str:
    """The whole HTML document: the table of contents of ``blocks``, the lead, the blocks."""
    taken: set[str] = set()
    for b in blocks:
        b.id = b.id or slug(b.title, taken)
    toc = "".join(f"<li class='l{b.level}'><a href='#{b.id}'>{html.escape(b.title)}</a></li>" for b in blocks)
    body = "\n".join(f"<h{b.level} id='{b.id}'>{html.escape(b.title)}</h{b.level}>\n{b.body}" for b in blocks)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body><div class='wrap'>"
        f"<nav class='toc' aria-label='contents'><b>Contents</b><ol>{toc}</ol></nav>"
        f"<main><h1>{html.escape(title)}</h1>\n<div class='lead'>{lead}</div>\n{body}\n</main></div></body></html>"
    )


def verdict_html(text: str) -> str:
    """A ``RESULT: PASS (...)`` style line, coloured by its verdict."""
    bad, good = re.search(r"\bFAIL|UNSTABLE|Unstable", text), re.search(r"\bPASS|Stable", text)
    cls = "fail" if bad else "pass" if good else ""
    return f"<p class='verdict {cls}'>{html.escape(text)}</p>"


def bullets(lines: list[str]) -> str:
    """Markdown bullet lines (``- **model**: ...``) as an HTML list, the bold marks dropped."""
    return "<ul>" + "".join(f"<li>{html.escape(x[2:].replace('**', ''))}</li>" for x in lines) + "</ul>"


def para(text: str, cls: str = "note") -> str:
    return f"<p class='{cls}'>{html.escape(text)}</p>" if text else ""


def figure(uri: str | None, alt: str, caption: str = "") -> str:
    if not uri:
        return para("No data for this figure.")
    cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f"<figure><img alt='{html.escape(alt)}' src='{uri}'>{cap}</figure>"


NUMERIC = re.compile(r"^[-+]?[\d,]*\.?\d+(e[-+]?\d+)?\s*(%|x|ms|s)?$|^\[[-\d., e+]+\]$", re.IGNORECASE)


def table(df: pd.DataFrame | None, fold_rows: int = FOLD_ROWS, what: str = "rows", empty: str = "") -> str:
    """``df`` as an HTML table in its own scrolling box: cells as ``render.fmt`` writes them,
    numbers right-aligned, a backend (column ``impl``) with its colour; folded past ``fold_rows``."""
    if df is None or not len(df):
        return para(empty or "No records of this kind.")
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    rows = []
    for rec in df.itertuples(index=False):
        tds = []
        for col, v in zip(df.columns, rec, strict=True):
            text = fmt(cell(v))
            cls = " class='num'" if NUMERIC.match(text) else " class='long'" if len(text) > 60 else ""
            cls = " class='impl'" if col == "impl" else cls
            sw = f"<span class='sw' style='background:{colour(text)}'></span>" if col == "impl" and text else ""
            tds.append(f"<td{cls}>{sw}{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(tds) + "</tr>")
    out = f"<div class='scroll'><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    if len(df) > fold_rows:
        return f"<details><summary>{len(df)} {what} (show)</summary>{out}</details>"
    return out
