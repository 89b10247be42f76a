"""``python -m bench.report.recipes OUT_DIR RUN_DIR...``: the recipes' analysis (``bench.check.recipes``)
over several runs, as ``recipes.md`` and ``recipes.html``. Apart from ``bench.check.recipes`` because it
builds on the report's modules (``bench.measure.frames``, ``bench.report.render``), and ``bench.report.tables``
uses the analysis (no import circle).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from bench.check.recipes import _numeric, fig_curves, headline, retarget, sections
from bench.measure.frames import load_run
from bench.report import page
from bench.report.render import markdown_table, png_uri


# ----------------------------------------------------------------------------- CLI
def load_accuracy(run_dirs: list[str]) -> pd.DataFrame:
    parts = [load_run(d).get("accuracy") for d in run_dirs]
    parts = [p for p in parts if p is not None and len(p)]
    return pd.concat(parts, ignore_index=True, sort=False) if parts else pd.DataFrame()


def write(out_dir: str | Path, run_dirs: list[str], targets: dict[str, float] | None = None) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    acc = load_accuracy(run_dirs)
    if acc.empty:
        raise ValueError("no accuracy records in " + ", ".join(run_dirs))
    if targets:
        acc = retarget(acc, targets)
    secs = sections(acc)
    md = ["# Recipes: accuracy of the full recipes", "", "Runs: " + ", ".join(f"`{Path(d).name}`" for d in run_dirs)]
    md += ["", "Final test accuracy (mean over seeds) and training time to the target, per implementation:", ""]
    md += headline(acc)
    for title, text, table in secs:
        md += ["", f"## {title}", ""] + ([text, ""] if text else []) + [markdown_table(table)]
    curves = _numeric(acc).pivot_table(index=["model", "impl", "seed"], columns="epoch", values="test_acc")
    curves.columns = [f"epoch_{int(c)}" for c in curves.columns]
    md += ["", "## Test accuracy per epoch", "", markdown_table(curves.reset_index())]
    (out / "recipes.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    lead = page.bullets(headline(acc))
    lead = page.para("Runs: " + ", ".join(Path(d).name for d in run_dirs), "") + lead
    curves_uri = png_uri(fig_curves(acc, None, page.colour))
    blocks = [page.Block("Test accuracy per epoch", page.figure(curves_uri, "curves", "Mean over seeds, band min..max; "
                                                                "dashed: the course's dnn curve."))]  # fmt: skip
    blocks += [page.Block(title, page.para(text) + page.table(table)) for title, text, table in secs]
    blocks.append(page.Block("Every seed, every epoch", page.table(curves.reset_index(), what="seeds")))
    (out / "recipes.html").write_text(page.page("nnbench recipes: accuracy of the full recipes", lead, blocks),
                                      encoding="utf-8")  # fmt: skip
    return out / "recipes.md"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.report.recipes", description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("run_dirs", nargs="+")
    ap.add_argument("--target", action="append", default=[], metavar="MODEL=ACC",
                    help="time to this target accuracy instead of the run's (repeatable)")  # fmt: skip
    args = ap.parse_args(argv)
    targets = {k: float(v) for k, v in (t.split("=", 1) for t in args.target)}
    print(write(args.out_dir, args.run_dirs, targets))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
