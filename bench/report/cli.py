"""``python -m bench report``: one run's report files, or several runs side by side.

Kept apart from ``bench.report.run_report`` (which ``bench.report.side_by_side`` builds on), so that the command
can reach both without an import circle.
"""

from __future__ import annotations

import argparse

from bench.measure.frames import RunDirError
from bench.measure.results import SchemaError
from bench.report.run_report import OUTPUT_FILES, write_report
from bench.report.side_by_side import OUTPUT_FILES as SIDE_FILES
from bench.report.side_by_side import write_side_by_side


def main(argv: list[str] | None = None) -> int:
    """``python -m bench report RUN_DIR`` (its report files) or ``RUN_A RUN_B ... --out DIR``
    (the runs side by side, ``bench.report.side_by_side``): 0 on success, 2 on bad input."""
    ap = argparse.ArgumentParser(
        prog="python -m bench report", description="Write the report files of a run, or several runs side by side."
    )
    ap.add_argument("run_dirs", nargs="+", help="run directories (runs/<run_id>, runs/latest)")
    ap.add_argument("--out", help="with several runs: the folder for side_by_side.html/.md/.png")
    args = ap.parse_args(argv)
    try:
        if len(args.run_dirs) > 1 or args.out:
            if not args.out:
                print("error: several runs need --out DIR")
                return 2
            out = write_side_by_side(args.run_dirs, args.out)
            print(f"wrote {', '.join(SIDE_FILES)} in {out.parent}")
            return 0
        out = write_report(args.run_dirs[0])
    except (RunDirError, SchemaError) as e:
        print(f"error: {e}")
        return 2
    print(f"wrote {', '.join(OUTPUT_FILES)} in {out.parent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
