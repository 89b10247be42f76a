"""Reports across runs (bench.report.history, bench.report.side_by_side) and the run's terminal output
(bench.measure.terminal), on real tiny runs: numpy and pure_python on tiny-mlp, agreement and speed.

Where a test needs what one machine cannot make in seconds (another commit, another machine,
a slower build) it copies a real run and changes exactly that in the copy, and says so.
"""

from __future__ import annotations

import json
import re
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import run as brun
from bench.measure.terminal import WIDTH, Progress, ProgressEstimate, summary_lines
from bench.report import cli as report_cli
from bench.report import history, side_by_side

PROFILE = """
    name = "tiny"
    models = ["tiny-mlp"]
    dtypes = ["float32"]
    seeds = [0]
    parts = ["agreement", "speed"]
    timeout_s = 120
    [agreement]
    batch = 4
    steps = 1
    [speed]
    phases = ["forward", "train_step"]
    batch_sizes = [4]
    warmup_rounds = 1
    min_rounds = 6
    max_rounds = 8
    round_min_s = 0.0
    target_s = 0.01
    [peak]
    gemm_n = 64
    rounds = 6
    [accuracy]
    epochs = 1
"""


def _run(prof: Path, out: Path, threads: int) -> Path:
    argv = ["--profile", str(prof), "--impls", "numpy,pure_python", "--out", str(out), "--threads", str(threads)]
    assert brun.main([*argv, "--no-report"]) == 0
    return (out / "latest").resolve()


def _edit_run_json(run_dir: Path, **changes: object) -> None:
    path = run_dir / "run.json"
    meta = json.loads(path.read_text())
    for key, value in changes.items():
        node = meta
        *parents, leaf = key.split("__")
        for p in parents:
            node = node[p]
        node[leaf] = value
    path.write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Three real runs at 1 thread in one folder (their commits and start dates then set to
    three successive ones: the code is the same, history only reads them), and one at 2 threads."""
    base = tmp_path_factory.mktemp("hist")
    prof = base / "tiny.toml"
    prof.write_text(textwrap.dedent(PROFILE))
    folder = base / "ci-artifacts"
    dirs = [_run(prof, folder, threads=1) for _ in range(3)]
    for i, d in enumerate(dirs):
        _edit_run_json(d, started=f"2026-11-0{i + 1}T10:00:00+0000", env__git_commit=f"{i + 1}" * 40)
    two = _run(prof, base / "two-threads", threads=2)
    return {"folder": folder, "dirs": dirs, "two": two, "base": base}


def test_history_over_a_folder_of_runs(runs, tmp_path):
    out = tmp_path / "hist"
    assert history.main([str(runs["folder"]), "--out", str(out)]) == 0
    for name in history.OUTPUT_FILES:
        assert (out / name).stat().st_size > 0, name
    md = (out / "history.md").read_text()
    assert md.startswith("# nnbench history: 3 runs, 1 series")  # `latest` not counted twice
    copy = tmp_path / "artifact-latest"  # an artifact store that copied `latest` as a folder
    shutil.copytree(runs["dirs"][2], copy)
    assert len(history.find_runs([runs["folder"], copy])) == 3
    assert "![history](history.png)" in md
    assert md.index("1111111111") < md.index("2222222222") < md.index("3333333333")  # date order
    runs_df, points = history.load_history([runs["folder"]])
    assert list(runs_df["commit"]) == ["1111111111", "2222222222", "3333333333"]
    # every (run, impl, phase) has its in-run ratio; pure_python's reference is numpy, numpy's the GEMM
    assert len(points) == 3 * 2 * 2 and points["ratio"].gt(0).all()
    assert set(points.loc[points["impl"] == "pure_python", "ref"]) == {"numpy"}
    assert set(points.loc[points["impl"] == "numpy", "ref"]) == {"gemm"}
    assert points.loc[points["x"] == 0, "R"].isna().all()  # the first run has nothing before it
    assert points.loc[points["x"] > 0, "R"].notna().all()
    page = (out / "history.html").read_text()
    assert page.count("data:image/png;base64,") == 1 and "<script" not in page
    assert not re.search(r"""(src|href)\s*=\s*['"]?https?:""", page)


def test_step_change_is_the_gates_verdict(runs, tmp_path):
    """A copy of the last run with numpy's train_step 50x slower (samples scaled in the copy; 50x
    so that the bootstrap CI of tiny, noisy timings clears the gate's threshold both ways):
    numpy against the GEMM is a regression step, pure_python against numpy an improvement,
    and the untouched forward phase is no step."""
    folder = tmp_path / "runs"
    shutil.copytree(runs["folder"], folder, symlinks=True)
    slow = folder / "slower"
    shutil.copytree(runs["dirs"][-1], slow)
    _edit_run_json(slow, run_id="slower", started="2026-11-09T10:00:00+0000", env__git_commit="4" * 40)
    lines = []
    for line in (slow / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["kind"] == "speed" and r["impl"] == "numpy" and r["phase"] == "train_step":
            r["samples_s"] = [50 * s for s in r["samples_s"]]
            r["median_s"] = 50 * r["median_s"]
        lines.append(json.dumps(r))
    (slow / "results.jsonl").write_text("\n".join(lines) + "\n")
    _, points = history.load_history([folder])
    last = points[points["commit"] == "4444444444"].set_index(["impl", "phase"])
    assert last.loc[("numpy", "train_step"), "step"] == "regression"
    assert last.loc[("numpy", "train_step"), "R"] == pytest.approx(50.0)  # the same samples, scaled
    assert last.loc[("pure_python", "train_step"), "step"] == "improvement"
    assert pd.isna(last.loc[("numpy", "forward"), "step"])
    history.write_history([folder], tmp_path / "out")
    md = (tmp_path / "out" / "history.md").read_text()
    steps = md[md.index("## Step changes") : md.index("## Ratio")]
    assert "| regression |" in steps and "| improvement |" in steps


def test_machines_are_separate_series(runs, tmp_path):
    """A copy of a run relabelled as another CPU: its own series, never compared with this one."""
    other = tmp_path / "other-machine"
    shutil.copytree(runs["dirs"][1], other)
    _edit_run_json(other, started="2026-11-02T11:00:00+0000", env__cpu_model="Other CPU 9000")
    runs_df, points = history.load_history([runs["dirs"][0], runs["dirs"][2], other])
    assert runs_df["series"].nunique() == 2
    theirs = points[points["series"].str.startswith("Other CPU 9000")]
    assert len(theirs) and theirs["R"].isna().all() and theirs["prev_run_id"].isna().all()
    mine = points[~points["series"].str.startswith("Other CPU 9000") & points["prev_run_id"].notna()]
    assert set(mine["prev_run_id"]) == {runs_df["run_id"][0]}  # the 3rd run follows the 1st, not the other CPU
    fig = history.fig_history(runs_df, points)
    assert "[2] Other CPU 9000" in fig._suptitle.get_text()


def test_side_by_side_threads(runs, tmp_path):
    out = tmp_path / "sbs"
    assert report_cli.main([str(runs["dirs"][0]), str(runs["two"]), "--out", str(out)]) == 0
    for name in side_by_side.OUTPUT_FILES:
        assert (out / name).stat().st_size > 0, name
    md = (out / "side_by_side.md").read_text()
    assert md.startswith("# nnbench: 2 runs side by side")
    assert "| threads | 1 | 2 |" in md and "| env.threads | 1 | 2 |" in md
    assert md.index("## What differs") < md.index("## tiny-mlp")
    table = md[md.index("## tiny-mlp") :]
    assert "| A samples/s | A x numpy | B samples/s | B x numpy | B/A samples/s |" in table
    assert table.count("| float32 |") == 4  # (forward, train_step) x (numpy, pure_python)


def test_report_cli_bad_input(runs, tmp_path, capsys):
    assert report_cli.main([str(runs["dirs"][0]), str(runs["two"])]) == 2
    assert "--out" in capsys.readouterr().out
    assert history.main([str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 2
    assert "no run directory" in capsys.readouterr().out


# ----------------------------------------------------------------------------- terminal


def test_estimate_does_not_jump():
    """Cases of 1 s, then a 60 s one, then 1 s ones: second by second the estimate moves
    smoothly (it grows while the long case runs; no jump when a case ends)."""
    est, shown = ProgressEstimate(total=8), []
    for d in [1, 60, 1, 1, 1, 1, 1, 1]:
        for t in range(d):
            left = est.left(float(t))
            if left is not None:
                shown.append(left)
        est.finish(float(d))
    steps = np.diff(shown)
    assert steps.max() <= 7.0  # at most (cases left - 1) s per s, growing while the long case runs
    assert shown[-1] < 10.0


def test_progress_plain_lines_and_estimate():
    class Clock:
        t = 0.0

        def __call__(self) -> float:
            return self.t

    import io

    clock, buf = Clock(), io.StringIO()
    p = Progress(3, stream=buf, clock=clock)
    assert not p.live  # a StringIO is not a terminal: plain lines
    p.show("numpy mlp float32", "speed", 0.0)
    clock.t = 10.0
    p.finish(10.0)
    p.show("torch mlp float32", "agreement", 0.0)
    clock.t = 14.0
    assert p.estimate() == "~16s"  # 10 s per case: 6 s of this one and 10 s of the last
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("[1/3] numpy mlp float32 | speed | case 0s | run 0s | est. left ?")
    assert lines[1].startswith("[2/3] torch mlp float32 | agreement | case 0s | run 10s | est. left ~20s")


def test_summary_fits_and_skips_are_not_errors(runs):
    from bench.measure.results import make_record, read_records

    recs = read_records(runs["dirs"][0])
    recs.append(make_record("error", impl="cupy", phase="availability", status="skipped", error="no GPU " * 40))
    recs.append(make_record("error", impl="keras", model="tiny-mlp", phase="speed", status="crash", error="x" * 300))
    lines = summary_lines(recs)
    assert max(map(len, lines)) <= WIDTH
    skipped = lines.index("skipped (not available here)")
    assert lines[skipped + 2].startswith("cupy ") and "crash" not in lines[skipped + 2]
    errors = lines[lines.index("errors") :]
    assert any(line.startswith("keras ") for line in errors) and not any("cupy" in line for line in errors)
    assert sum(line.startswith(("numpy ", "pure_python ")) for line in lines) == 4  # speed rows


def test_progress_in_place_on_a_terminal():
    """On a terminal the line is redrawn in place (rich Live) and notes stay above it."""
    import io

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    buf = Tty()
    p = Progress(2, stream=buf)
    assert p.live
    p.show("numpy mlp float32", "speed", 0.0)
    p.note("  numpy mlp float32: TIMEOUT during 'speed'; recorded, carrying on")
    p.finish(1.0)
    p.close()
    out = buf.getvalue()
    assert "\x1b[2K" in out  # erase-line: redrawn in place, not scrolled
    assert "TIMEOUT during 'speed'" in out and "[1/2] numpy mlp float32 | speed" in out


def test_history_reads_multi_process_runs():
    """The committed quick baseline merges two runs of 3 worker processes per speed case: its
    ratios are the gate's figure (the fastest process), not a median over a ragged list."""
    from bench.judge import speed
    from bench.measure.frames import load_run
    from bench.report import history

    base = Path(__file__).resolve().parents[2] / "bench" / "baselines" / "quick" / "2cpu-avx2-fma"
    runs, points = history.load_history([base])
    assert len(runs) == 1 and len(points)
    sets = speed._sample_sets(load_run(base))
    key = ("torch", "mlp", "float32", "train_step", 50)
    assert len(sets[key]) == 6  # the case really has several processes (2 runs x 3)
    row = points[(points["impl"] == "torch") & (points["model"] == "mlp") & (points["phase"] == "train_step")]
    want = speed.center(sets[key]) / speed.center(sets[("numpy", *key[1:])])
    assert row["ratio"].iloc[0] == pytest.approx(want)
