"""Screenshots of a report's first screen and its height, in headless Chromium (Playwright).

    python scripts/report_screenshots.py reports/latest/report.html --out docs/img

writes ``report-1400.png`` and ``report-800.png`` (the first screen at each width) and prints
the page's full height at each width.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("page", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--widths", default="1400,800")
    ns = ap.parse_args(argv)
    if not ns.page.is_file():
        ap.error(f"{ns.page}: no such file")
    exe = os.environ.get("NNBENCH_CHROMIUM") or "/usr/lib/chromium/chromium"
    exe = exe if os.access(exe, os.X_OK) else shutil.which("chromium")
    if not exe:
        ap.error("no Chromium (apt-get install chromium, or set NNBENCH_CHROMIUM)")
    from playwright.sync_api import sync_playwright

    ns.out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        for w in (int(x) for x in ns.widths.split(",")):
            page = browser.new_page(viewport={"width": w, "height": 900})
            page.goto(ns.page.resolve().as_uri())
            height = page.evaluate("document.documentElement.scrollHeight")
            shot = ns.out / f"{ns.page.stem}-{w}.png"
            page.screenshot(path=str(shot))
            print(f"{ns.page} at {w} px: {height} px tall; first screen: {shot}")
            page.close()
        browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
