"""Every HTML page nnbench writes, opened in a real browser (headless Chromium via Playwright) at
1400 and 800 px wide: the page never scrolls sideways (wide tables scroll in their own box), no
image runs past the window, every table-of-contents link lands on its section, no cell shows a
raw Python value (``None``, ``nan``, ``True``, ``{}``...). The pages: the run report, history,
side by side and recipes of one real small run (and a synthetic run with a broken backend), and
every committed ``reports/**/*.html``.

Negative controls: a page with an over-wide table outside a scroll box, a raw ``None`` cell, a
dead contents link and an over-wide image each fail the check that should catch them.

Without Chromium (``NNBENCH_CHROMIUM``, else ``chromium`` on the PATH) or the ``playwright``
package the tests skip and say which is missing, except where ``NNBENCH_REQUIRE_BROWSER=1``
(``.ci/run`` sets it, and installs Debian's chromium): there a missing browser fails.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WIDTHS = (1400, 800)
RAW = ("None", "nan", "NaN", "True", "False", "{}", "[]", "<NA>", "NaT")


def _browser_or_why() -> tuple[str | None, str]:
    debian = "/usr/lib/chromium/chromium"  # the binary behind Debian's /usr/bin/chromium wrapper script
    exe = os.environ.get("NNBENCH_CHROMIUM") or (debian if os.access(debian, os.X_OK) else None)
    exe = exe or next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if importlib.util.find_spec("playwright") is None:
        return None, "the playwright package is not installed (pip install playwright)"
    if not exe:
        return None, "no Chromium here (apt-get install chromium, or set NNBENCH_CHROMIUM)"
    return exe, ""


@pytest.fixture(scope="module")
def browser():
    exe, why = _browser_or_why()
    if exe is None:
        if os.environ.get("NNBENCH_REQUIRE_BROWSER") == "1":
            pytest.fail(f"NNBENCH_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=exe, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


CHECK = """(raw) => {
  const out = [];
  const de = document.documentElement;
  if (de.scrollWidth > window.innerWidth + 1)
    out.push(`page scrolls sideways: ${de.scrollWidth} px > ${window.innerWidth}`);
  for (const img of document.images) {
    const r = img.getBoundingClientRect();
    if (r.right > window.innerWidth + 1) out.push(`image '${img.alt}' ends at ${Math.round(r.right)} px`);
  }
  for (const a of document.querySelectorAll("a[href^='#']")) {
    const id = decodeURIComponent(a.getAttribute('href').slice(1));
    if (!document.getElementById(id)) out.push(`contents link #${id} has no target`);
  }
  for (const td of document.querySelectorAll('td')) {
    const t = td.textContent.trim();
    if (raw.includes(t)) { out.push(`raw value cell: '${t}'`); break; }
  }
  return out;
}"""


def problems(browser, path: Path, width: int) -> list[str]:
    """What is wrong with the page at ``path`` at ``width`` px (empty: nothing)."""
    page = browser.new_page(viewport={"width": width, "height": 900})
    try:
        page.goto(path.resolve().as_uri())
        page.wait_for_load_state("load")
        return list(page.evaluate(CHECK, list(RAW)))
    finally:
        page.close()


TINY = """
name = "browser"
models = ["mlp"]
dtypes = ["float32"]
seeds = [0]
threads = 1
timeout_s = 200
parts = ["agreement", "speed", "accuracy"]
[agreement]
batch = 4
steps = 1
seed = 0
[speed]
processes = 2
phases = ["forward", "train_step"]
batch_sizes = [8, 50]
warmup_rounds = 1
min_rounds = 3
max_rounds = 5
round_min_s = 0.001
target_s = 0.05
data_seed = 1
[peak]
gemm_n = 128
rounds = 2
[accuracy]
epochs = 1
train_samples = 500
test_samples = 200
eval_batch = 100
batch_size = 0
max_steps = 3
targets = { mlp = 0.97 }
[overrides.pure_python.speed]
processes = 1
batch_sizes = [1]
min_rounds = 2
max_rounds = 2
[overrides.pure_python.accuracy]
max_steps = 1
test_samples = 10
"""


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> list[Path]:
    """The pages nnbench writes, from one real small run (numpy, pure Python) measured twice."""
    tmp = tmp_path_factory.mktemp("browser")
    prof = tmp / "browser.toml"
    prof.write_text(TINY, encoding="utf-8")
    env = {**os.environ, "NNBENCH_REQUIRE": ""}
    runs = []
    for name in ("a", "b"):
        cmd = [sys.executable, "-m", "bench", "run", "--profile", str(prof), "--impls", "numpy,pure_python",
               "--out", str(tmp / name)]  # fmt: skip
        if os.environ.get("MNIST_DIR"):
            cmd += ["--data-dir", os.environ["MNIST_DIR"]]
        res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        runs.append((tmp / name / "latest").resolve())
    from bench.report import history, recipes, side_by_side

    out = [runs[0] / "report.html"]
    out.append(history.write_history([str(tmp / "a"), str(tmp / "b")], tmp / "history"))
    out.append(side_by_side.write_side_by_side(runs, tmp / "sbs"))
    recipes.write(tmp / "recipes", [str(r) for r in runs])
    out.append(tmp / "recipes" / "recipes.html")
    spec = importlib.util.spec_from_file_location("_nnbench_synth", Path(__file__).with_name("test_compare.py"))
    synth = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(synth)
    from bench.report import run_report

    out.append(run_report.write_report(synth.synthetic_run(tmp / "synthetic", seed=5, broken=("numba",))))
    return out


@pytest.mark.parametrize("width", WIDTHS)
def test_pages_of_a_real_run_read_in_a_browser(browser, pages, width):
    for p in pages:
        assert problems(browser, p, width) == [], p


COMMITTED = sorted((ROOT / "reports").rglob("*.html"))


@pytest.mark.parametrize("width", WIDTHS)
def test_committed_reports_read_in_a_browser(browser, width):
    assert COMMITTED, "no committed report"
    bad = {str(p.relative_to(ROOT)): problems(browser, p, width) for p in COMMITTED}
    assert {k: v for k, v in bad.items() if v} == {}


def _page_with(tmp_path: Path, body: str) -> Path:
    from bench.report import page

    p = tmp_path / "control.html"
    p.write_text(page.page("control", "lead", [page.Block("Only", body)]), encoding="utf-8")
    return p


def test_negative_controls_each_fail(browser, tmp_path):
    import pandas as pd

    from bench.report import page

    wide = pd.DataFrame({f"column {i}": ["x" * 30] for i in range(40)})
    assert problems(browser, _page_with(tmp_path, page.table(wide)), 800) == []  # positive control: boxed
    unboxed = page.table(wide).replace("<div class='scroll'>", "<div>")
    assert any("scrolls sideways" in p for p in problems(browser, _page_with(tmp_path, unboxed), 800))
    raw = "<table><tr><td>None</td></tr></table>"
    assert any("raw value" in p for p in problems(browser, _page_with(tmp_path, raw), 1400))
    dead = "<a href='#nowhere'>x</a>"
    assert any("no target" in p for p in problems(browser, _page_with(tmp_path, dead), 1400))
    gif = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"  # 1x1 px
    img = f"<img alt='wide' style='width:3000px;max-width:none' src='{gif}'>"
    assert any("image 'wide'" in p for p in problems(browser, _page_with(tmp_path, img), 1400))
