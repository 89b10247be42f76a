"""``python -m bench baseline``: several runs' speed records merged into one gate baseline."""

from __future__ import annotations

import json

import pytest
from test_compare import light_frames, run_main, synthetic_run

from bench.judge import baseline, compare, speed
from bench.measure.results import RUN_FILE, read_records


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
    sets = speed._sample_sets(light_frames(read_records(out)))
    key = ("numpy", "mlp", "float32", "train_step", 64)
    good_sets = speed._sample_sets(light_frames(read_records(good)))
    assert len(sets[key]) == 6 and speed.center(sets[key]) == pytest.approx(speed.center(good_sets[key]))


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


# ----------------------------------------------------------------------------- machine kinds

AVX2 = {"cpu_simd": "avx2,fma", "cpu_cores_usable": 2}
AVX512 = {"cpu_simd": "avx2,fma,avx512f,avx512bw,avx512_vnni", "cpu_cores_usable": 2}


def _on(run_dir, env: dict):
    """``run_dir`` as if measured on a machine with ``env``."""
    meta = json.loads((run_dir / RUN_FILE).read_text())
    (run_dir / RUN_FILE).write_text(json.dumps(meta | {"env": env}))
    return run_dir


def _kinds_folder(tmp_path, *envs) -> tuple:
    """A folder of baselines, one per env (named by its kind, as committed ones are)."""
    folder = tmp_path / "baselines"
    for i, env in enumerate(envs):
        _on(synthetic_run(folder / baseline.machine_kind(env), seed=10 + i), env)
    return folder


def test_machine_kind_names_cores_and_simd():
    assert baseline.machine_kind(AVX2) == "2cpu-avx2-fma"
    assert baseline.machine_kind(AVX512) == "2cpu-avx2-fma-avx512f-avx512bw-avx512_vnni"
    assert baseline.machine_kind({"cpu_simd": "avx2,fma", "cpu_cores": 4}) == "4cpu-avx2-fma"
    assert baseline.machine_kind({}) is None and baseline.machine_kind(None) is None


def test_select_picks_the_current_machine_kind(tmp_path):
    folder = _kinds_folder(tmp_path, AVX2, AVX512)
    for env in (AVX2, AVX512):
        sel = baseline.select(folder, env)
        assert sel.path == folder / baseline.machine_kind(env) and sel.same_kind and sel.speed_note is None
    run = folder / baseline.machine_kind(AVX2)  # a run folder is its own baseline, kind checked all the same
    assert baseline.select(run, AVX2).same_kind and not baseline.select(run, AVX512).same_kind
    assert baseline.select(run, None).same_kind  # a run that did not record its machine: not a mismatch


def test_select_without_the_current_kind_takes_the_closest_and_says_speed_is_not_gated(tmp_path):
    folder = _kinds_folder(tmp_path, AVX2, {"cpu_simd": "neon", "cpu_cores_usable": 2})
    sel = baseline.select(folder, AVX512)
    assert sel.path.name == "2cpu-avx2-fma" and not sel.same_kind
    assert "speed not gated" in sel.speed_note and "2cpu-avx2-fma" in sel.speed_note and "2cpu-neon" in sel.speed_note


@pytest.mark.parametrize("case", ["empty", "missing", "two of one kind"])
def test_select_refuses_a_folder_it_cannot_choose_from(tmp_path, case):
    folder = tmp_path / "baselines"
    if case == "empty":
        folder.mkdir()
    elif case == "two of one kind":
        _kinds_folder(tmp_path, AVX2)
        _on(synthetic_run(folder / "another", seed=3), AVX2)
    with pytest.raises(baseline.BaselineError, match="not found|not a run directory|2 baselines of machine kind"):
        baseline.select(folder, AVX2)


def test_merge_refuses_runs_of_different_simd(tmp_path, capsys):
    a, b = _on(synthetic_run(tmp_path / "a", seed=1), AVX2), _on(synthetic_run(tmp_path / "b", seed=2), AVX512)
    assert baseline.main([str(a), str(b), "--out", str(tmp_path / "base")]) == 2
    assert "cpu_simd" in capsys.readouterr().out
    _on(b, AVX2)  # positive control
    assert baseline.main([str(a), str(b), "--out", str(tmp_path / "base")]) == 0
    assert "machine kind 2cpu-avx2-fma" in capsys.readouterr().out


def test_gate_is_speed_gated_only_against_the_same_machine_kind(tmp_path, capsys):
    """A 2x slower torch fails against the baseline of its own kind (picked from the folder); with
    only another kind's baseline, the same run's speed rows are notes (saying they would fail),
    the verdict line says speed was not gated, and the other checks still fail a broken numba."""
    folder = _kinds_folder(tmp_path, AVX2, AVX512)
    slow = _on(synthetic_run(tmp_path / "slow", seed=2, slow={"torch": 2.0}), AVX512)
    assert run_main(folder, slow) == 1
    out = capsys.readouterr().out
    assert "baseline: " + str(folder / baseline.machine_kind(AVX512)) in out and "NOT GATED" not in out
    plain = _on(synthetic_run(tmp_path / "plain", seed=3), AVX512)
    assert run_main(folder, plain) == 0  # positive control
    capsys.readouterr()

    other = tmp_path / "only_avx2"
    _kinds_folder(other, AVX2)
    assert run_main(other / "baselines", slow) == 0
    out = capsys.readouterr().out
    assert "WARNING: speed not gated" in out and "SPEED NOT GATED" in out.splitlines()[-1]
    base, cur, sel = compare.load_pair(str(other / "baselines"), str(slow))
    speed = compare.compare_frames(base, cur, speed_note=sel.speed_note)["speed"]
    assert (speed["verdict"] == compare.NOTE).all() and not speed["suspect"].any()
    assert speed["detail"].str.contains("would be FAIL").any()  # what it would have said is kept
    broken = _on(synthetic_run(tmp_path / "broken", seed=4, broken=("numba",)), AVX512)
    assert run_main(other / "baselines", broken) == 1  # agreement is gated whatever the kind


def test_committed_baselines_are_named_by_their_machine_kind():
    """The gate picks by ``run.json``; a folder named after another kind would mislead a reader."""
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "bench" / "baselines" / "quick"
    runs = [d for d in folder.iterdir() if d.is_dir()]
    assert runs, folder
    for d in runs:
        meta = json.loads((d / RUN_FILE).read_text())
        assert baseline.machine_kind(meta["env"]) == d.name, d
        assert meta["profile"]["name"] == "quick" and not meta.get("injected_slowdown")
