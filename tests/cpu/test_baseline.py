"""``python -m bench baseline``: several runs' speed records merged into one gate baseline."""

from __future__ import annotations

import json

import pytest
from test_compare import light_frames, run_main, synthetic_run

from bench import baseline, compare
from bench.results import RUN_FILE, read_records


@pytest.fixture(autouse=True)
def _no_required_backends(monkeypatch):
    monkeypatch.delenv("NNBENCH_REQUIRE", raising=False)


def _slow_numpy(run_dir, factor: float) -> None:
    """Every numpy speed process of ``run_dir`` ``factor`` x slower: a run whose reference ran
    through a neighbour's burst from start to end."""
    recs = read_records(run_dir)
    for r in recs:
        if r["kind"] == "speed" and r["impl"] == "numpy":
            r["samples_s"] = [factor * x for x in r["samples_s"]]
            r["median_s"] *= factor
    (run_dir / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))


def test_merge_keeps_every_process_and_the_first_runs_other_records(tmp_path):
    a, b = synthetic_run(tmp_path / "a", seed=1), synthetic_run(tmp_path / "b", seed=2)
    out = tmp_path / "base"
    assert baseline.main([str(a), str(b), "--out", str(out)]) == 0
    merged = read_records(out)
    speed = [r for r in merged if r["kind"] == "speed" and r["impl"] == "numpy"]
    assert sorted({r["process"] for r in speed}) == [0, 1, 2, 3, 4, 5]
    pp = {r["process"] for r in merged if r["kind"] == "speed" and r["impl"] == "pure_python"}
    assert pp == {0, 3}  # one process from each run, its index past the first run's
    assert sum(r["kind"] == "peak" for r in merged) == 4  # the GEMM before and after, per run
    first = read_records(a)
    assert [r for r in merged if r["kind"] == "agreement"] == [r for r in first if r["kind"] == "agreement"]
    assert {r["run_id"] for r in merged} == {"a"}
    assert json.loads((out / RUN_FILE).read_text())["merged_from"] == ["a", "b"]


def test_merged_baseline_outlives_a_run_whose_reference_was_slow(tmp_path):
    """The gate judges the fastest process: a baseline run whose numpy was 1.6x slow throughout
    makes every other implementation look 1.6x slower against it. Merged with a clean run, the
    baseline is clean; negative control: that run alone as the baseline fails an A/A gate."""
    bad, good = synthetic_run(tmp_path / "bad", seed=1), synthetic_run(tmp_path / "good", seed=2)
    _slow_numpy(bad, 1.6)
    cur = synthetic_run(tmp_path / "cur", seed=3)
    assert run_main(bad, cur) == 1  # negative control
    out = tmp_path / "base"
    baseline.merge([bad, good], out)
    assert run_main(out, cur) == 0
    sets = compare._sample_sets(light_frames(read_records(out)))
    key = ("numpy", "mlp", "float32", "train_step", 64)
    good_sets = compare._sample_sets(light_frames(read_records(good)))
    assert len(sets[key]) == 6 and compare.center(sets[key]) == pytest.approx(compare.center(good_sets[key]))


@pytest.mark.parametrize(
    ("key", "value", "what"),
    [("threads", 2, "threads"), ("cpus", [0], "cpus"), ("injected_slowdown", "torch:train_step=1.25", "injected")],
)
def test_runs_of_another_configuration_are_refused(tmp_path, capsys, key, value, what):
    a, b = synthetic_run(tmp_path / "a", seed=1), synthetic_run(tmp_path / "b", seed=2)
    assert baseline.main([str(a), str(b), "--out", str(tmp_path / "ok")]) == 0  # positive control
    meta = json.loads((b / RUN_FILE).read_text())
    meta[key] = value
    (b / RUN_FILE).write_text(json.dumps(meta))
    assert baseline.main([str(a), str(b), "--out", str(tmp_path / "base")]) == 2
    assert what in capsys.readouterr().out


def test_not_a_run_dir_is_refused(tmp_path, capsys):
    a = synthetic_run(tmp_path / "a", seed=1)
    assert baseline.main([str(a), str(tmp_path / "nothing"), "--out", str(tmp_path / "base")]) == 2
    assert "not a run directory" in capsys.readouterr().out
