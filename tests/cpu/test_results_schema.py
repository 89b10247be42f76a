"""The results schema across versions (``bench.measure.results``): runs written before the current
version load with the current column names; a newer version is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bench.judge import compare
from bench.measure.frames import load_run, run_meta
from bench.measure.results import RESULTS_FILE, RUN_FILE, SCHEMA_VERSION, SchemaError, append_records, make_record
from bench.report import cli as report_cli
from bench.report import history

# the gate baseline committed until 2026-11-23 (a874d42), written as schema 1, kept as a fixture
OLD_RUN = Path(__file__).resolve().parent / "data" / "quick-schema1"


def raw_records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / RESULTS_FILE).read_text().splitlines() if line.strip()]


def test_the_old_run_is_old():
    """What the tests below stand on: the old baseline predates the current schema."""
    assert json.loads((OLD_RUN / RUN_FILE).read_text())["schema_version"] == 1 < SCHEMA_VERSION
    assert any("speedup_vs_pure_python" in r for r in raw_records(OLD_RUN))


def test_old_schema_run_loads_with_the_new_column_names():
    frames = load_run(OLD_RUN)
    speed = frames["speed"]
    cols = set(speed.columns)
    assert {"env.hostname", "env.cpu_model", "env.blas", "env.threads", "run.threads", "run.profile.name"} <= cols
    assert not [c for c in cols if c.startswith("env.env.")]  # schema 1 named them env.env.<key>
    assert not {"env.run_id", "env.profile.name", "env.started"} & cols  # ... and these env.<key>
    assert speed["run.profile.name"].iloc[0] == "quick"
    # the renamed speed column: the old one is gone, the new one computed from the run's medians
    assert "speedup_vs_pure_python" not in cols
    assert speed["x_vs_pure_python_b1"].notna().all()
    assert (speed.loc[speed["impl"] == "pure_python", "x_vs_pure_python_b1"] == 1.0).all()
    # pure Python ran at batch 1 only in this run, so the old figures meant the same: they agree
    old = {
        (r["impl"], r["model"], r["phase"], r.get("process")): r["speedup_vs_pure_python"]
        for r in raw_records(OLD_RUN)
        if r["kind"] == "speed"
    }
    for r in speed.itertuples():
        assert r.x_vs_pure_python_b1 == pytest.approx(old[(r.impl, r.model, r.phase, r.process)], rel=1e-9)
    # the readers that go by run.json's keys get them as before (compare, history, side by side)
    meta = run_meta(frames)
    assert meta["env.cpu_model"] == json.loads((OLD_RUN / RUN_FILE).read_text())["env"]["cpu_model"]
    assert meta["threads"] == 2 and meta["profile.name"] == "quick" and meta["run_id"] == "20261123-133009-quick"
    row = history.run_row(OLD_RUN, frames, history.SERIES_KEYS)
    assert row["profile"] == "quick" and row["threads"] == 2 and row["commit"] != "unknown"
    assert row["series"].startswith(meta["env.cpu_model"])
    assert compare.main([str(OLD_RUN), str(OLD_RUN), "--bootstrap", "100"]) == 0


def test_old_column_with_another_meaning_is_recomputed(tmp_path):
    """A schema-1 ``speedup_vs_pure_python`` taken against pure Python at the same batch (50) is
    not carried over as ``x_vs_pure_python_b1``, which is against batch 1."""
    rd = tmp_path / "v1"
    common = {"run_id": "v1", "model": "mlp", "dtype": "float32", "phase": "forward"}
    recs = [
        make_record("speed", impl="pure_python", batch_size=1, median_s=0.04, **common),  # 25 samples/s
        make_record("speed", impl="pure_python", batch_size=50, median_s=1.0, **common),  # 50 samples/s
        make_record("speed", impl="numpy", batch_size=50, median_s=0.01, **common),
    ]
    for r in recs:
        r["schema_version"] = 1
    recs[2]["speedup_vs_pure_python"] = 100.0  # schema 1: 5000 / 50, the same batch
    append_records(rd, recs)
    speed = load_run(rd)["speed"].set_index(["impl", "batch_size"])
    assert speed.loc[("numpy", 50), "x_vs_pure_python_b1"] == pytest.approx(5000 / 25)
    assert "speedup_vs_pure_python" not in speed.columns


@pytest.mark.parametrize("where", ["run.json", "results.jsonl"])
def test_newer_schema_is_refused(tmp_path, capsys, where):
    rd = tmp_path / "newer"
    shutil.copytree(OLD_RUN, rd)
    if where == "run.json":
        meta = json.loads((rd / RUN_FILE).read_text())
        meta["schema_version"] = SCHEMA_VERSION + 1
        (rd / RUN_FILE).write_text(json.dumps(meta))
    else:
        append_records(rd, [{**make_record("peak", impl="numpy", gflops=1.0), "schema_version": SCHEMA_VERSION + 1}])
    with pytest.raises(SchemaError, match="newer nnbench"):
        load_run(rd)
    assert report_cli.main([str(rd)]) == 2
    assert f"schema {SCHEMA_VERSION + 1}" in capsys.readouterr().out
    # negative control: the same run at the current version loads
    (rd / RESULTS_FILE).write_text((OLD_RUN / RESULTS_FILE).read_text())
    (rd / RUN_FILE).write_text((OLD_RUN / RUN_FILE).read_text())
    assert "speed" in load_run(rd)
