"""Reports (bench.report.run_report and the modules it builds on) on synthetic runs: tidy frames, the four
files, self-contained HTML, skipped implementations visible with their reason, partial runs."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from bench.measure.results import RESULTS_FILE, RUN_FILE, SCHEMA_VERSION, append_records, make_record
from bench.report import cli as report_cli
from bench.report import run_report as report
from bench.report.render import markdown_table
from bench.report.tables import agreement_table

# the synthetic-run generator lives in test_compare.py; load it by path (no tests package)
_spec = importlib.util.spec_from_file_location("_nnbench_synthetic", Path(__file__).with_name("test_compare.py"))
_synthetic = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_synthetic)
SKIPPED, synthetic_run = _synthetic.SKIPPED, _synthetic.synthetic_run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return synthetic_run(tmp_path_factory.mktemp("rep") / "run-1", seed=5, broken=("numba",))


def test_load_run_tidy_with_env(run_dir):
    frames = report.load_run(run_dir)
    assert {"availability", "setting", "agreement", "speed", "accuracy", "peak", "compile", "error"} <= set(frames)
    speed = frames["speed"]
    # one row per (impl, model, phase, batch, worker process): 3 processes, 1 for pure Python
    cases = speed.groupby(["impl", "model", "phase", "batch_size"])["process"].nunique()
    assert len(cases) == 5 * 2 * 3 * 2
    assert (cases.drop("pure_python", level="impl") == 3).all() and (cases["pure_python"] == 1).all()
    assert len(speed) == (4 * 3 + 1) * 2 * 3 * 2
    # run.json's machine (its "env") as env.<key>, the rest as run.<key>: each named once
    for col in ("env.cpu_model", "env.cores", "env.blas", "env.versions.numpy", "run.git_commit", "run.run_id"):
        assert col in speed.columns, col
    assert not [c for c in speed.columns if c.startswith(("env.env.", "env.run_id", "run.env."))]
    assert (speed["schema_version"] == SCHEMA_VERSION).all()
    # derived columns filled from in-run medians: numpy against itself is exactly 1
    np_rows = speed[speed["impl"] == "numpy"]
    assert (np_rows["speedup_vs_numpy"] == 1.0).all()
    assert speed["x_vs_pure_python_b1"].notna().all()
    assert (speed["frac_peak"] > 0).all()


def test_write_report_files(run_dir):
    html_path = report.write_report(run_dir)
    for name in report.OUTPUT_FILES:
        assert (run_dir / name).stat().st_size > 0, name
    flat = pd.read_parquet(run_dir / "results.parquet")
    assert set(flat["kind"]) >= {"speed", "agreement", "availability"}
    assert len(flat) == sum(len(df) for df in report.load_run(run_dir).values())
    csv = pd.read_csv(run_dir / "results.csv")
    samples = csv.loc[csv["kind"] == "speed", "samples_s"].iloc[0]
    assert len(json.loads(samples)) > 1

    page = html_path.read_text()
    assert page.count("data:image/png;base64,") == 5  # every figure drawn and embedded
    assert not re.search(r"""(src|href)\s*=\s*['"]?https?:""", page), "external asset in report.html"
    assert "<script" not in page and "<link" not in page


def test_skipped_and_broken_are_visible(run_dir):
    report.write_report(run_dir)
    md = (run_dir / "summary.md").read_text()
    page = (run_dir / "report.html").read_text()
    for impl, reason in SKIPPED.items():
        assert re.search(rf"\| {re.escape(impl)} \| ✗ \| {re.escape(reason)} \|", md), impl
        assert reason in page
    # numba's agreement fails: it is listed as not passed, and its speed rows not validated
    agr = agreement_table(report.load_run(run_dir))
    assert not agr.loc[agr["impl"] == "numba", "passed"].any()
    assert agr.loc[agr["impl"] == "numpy", "passed"].all()
    section = md.split("## Agreement", 1)[1].split("\n## ", 1)[0]
    rows = {line.split("|")[1].strip(): line for line in section.splitlines() if line.startswith("| ")}
    # columns: impl | model | dtype | passed | ...: the rendered table says numba failed, numpy passed
    assert rows["numba"].split("|")[4].strip() == "✗", rows["numba"]
    assert rows["numpy"].split("|")[4].strip() == "✓", rows["numpy"]
    for section in ("## Environment", "## Speed", "## Compile / JIT time", "## Accuracy", "## Errors"):
        assert section in md


def test_partial_run_and_no_run_json(tmp_path):
    """Only availability and one speed row, no run.json: still a report, empty sections say so."""
    rd = tmp_path / "partial"
    append_records(
        rd,
        [
            make_record("availability", impl="numpy", available=True, reason="", run_id="p"),
            make_record("availability", impl="cupy", available=False, reason="no GPU", run_id="p"),
            make_record(
                "speed", impl="numpy", model="mlp", dtype="float32", phase="forward", batch_size=50, median_s=0.01
            ),
        ],
    )
    # a torn last line (crash mid-write) is dropped
    with open(rd / RESULTS_FILE, "a") as f:
        f.write('{"schema_version": 1, "kind": "spe')
    report.write_report(rd)
    md = (rd / "summary.md").read_text()
    assert "| cupy | ✗ | no GPU |" in md
    assert md.count("_No records of this kind._") >= 4
    assert "data:image/png;base64," in (rd / "report.html").read_text()


def test_empty_results_file(tmp_path):
    rd = tmp_path / "empty"
    rd.mkdir()
    (rd / RESULTS_FILE).write_text("")
    (rd / RUN_FILE).write_text(json.dumps({"run_id": "empty"}))
    report.write_report(rd)
    assert "No data for this figure." in (rd / "report.html").read_text()


def test_cli_bad_input(tmp_path, capsys):
    assert report_cli.main([str(tmp_path / "missing")]) == 2
    assert "run directory not found" in capsys.readouterr().out
    rd = tmp_path / "newer"
    append_records(rd, [{"schema_version": SCHEMA_VERSION + 1, "kind": "speed"}])
    assert report_cli.main([str(rd)]) == 2
    assert "newer nnbench" in capsys.readouterr().out


def test_cli_ok(run_dir, capsys):
    assert report_cli.main([str(run_dir)]) == 0
    assert "report.html" in capsys.readouterr().out


def test_markdown_table_escapes():
    md = markdown_table(pd.DataFrame({"a": ["x|y", None], "b": [1.23456789, float("nan")]}))
    assert md.splitlines()[2] == "| x\\|y | 1.235 |"
    assert md.splitlines()[3] == "|  |  |"


def test_summary_opens_with_headline_and_gate_verdict(run_dir, tmp_path):
    import json
    import shutil

    rd = tmp_path / "gated"
    shutil.copytree(run_dir, rd)
    report.write_report(rd)
    md = (rd / "summary.md").read_text()
    assert "Regression gate" not in md  # no gate ran: none claimed
    assert md.index("## Headline") < md.index("## Environment")
    (rd / report.GATE_FILE).write_text(json.dumps({"verdict": "PASS", "baseline": "bench/baselines/quick",
                                                    "confirmation": False, "confirm_dir": None}))  # fmt: skip
    report.write_report(rd)
    top = (rd / "summary.md").read_text().splitlines()[:4]
    assert any(line.startswith("**Regression gate: PASS** against `bench/baselines/quick`") for line in top), top
    assert "Regression gate: PASS" in (rd / "report.html").read_text()
    assert "not gated" not in (rd / "summary.md").read_text()
    note = "speed not gated: bench/baselines/quick has no baseline of this run's machine kind (4cpu-neon; ...)"
    (rd / report.GATE_FILE).write_text(json.dumps({"verdict": "PASS", "baseline": "bench/baselines/quick/2cpu-avx2-fma",
                                                    "confirmation": False, "speed_not_gated": note}))  # fmt: skip
    report.write_report(rd)
    assert f"**{note}**" in (rd / "summary.md").read_text().splitlines()[:6]
