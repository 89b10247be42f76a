"""The regression gate (bench.judge.compare) on synthetic runs.

A synthetic run draws per-round times from a noise model: true per-call time of each
(impl, model, phase, batch) x a uniform machine-speed factor (another machine) x a
factor per worker process (``PROCESS_SD``: what real pinned quick runs on this machine kind
show, with now and then a whole process 1.6x slow; 3 processes per case, 1 for pure Python,
the GEMM measured before and after) x per-round log-normal noise with occasional 1.5-3x
spikes. A/A pairs must pass; a 1.25x slowdown of one implementation's phase, a 2x relative
slowdown, a broken agreement, an accuracy drop and a new crash must fail.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from bench.judge import compare, speed
from bench.measure.results import (
    COMMON,
    KIND_COLUMNS,
    RUN_FILE,
    SCHEMA_VERSION,
    append_records,
    make_record,
    read_records,
)


@pytest.fixture(autouse=True)
def _no_required_backends(monkeypatch):
    """The gate reads NNBENCH_REQUIRE (rule 7); tox sets it for the whole test run. These
    synthetic runs name their own implementations, so the environment's list must not apply;
    rule 7 has its own test with an explicit list."""
    monkeypatch.delenv("NNBENCH_REQUIRE", raising=False)


IMPLS = ("pure_python", "numpy", "numba", "keras", "torch")
SKIPPED = {"cupy": "no CUDA device: cudaErrorNoDevice", "torch-cuda": "torch.cuda.is_available() is False"}
MODELS = {"mlp": 1.0, "cnn": 6.0}
PHASES = {"forward": 0.3, "loss_and_grads": 0.8, "train_step": 1.0}
BATCHES = (1, 64)
IMPL_SPEED = {"pure_python": 300.0, "numpy": 1.0, "numba": 0.8, "keras": 2.5, "torch": 0.6}
# rounds per case like the quick profile: fast backends fill ~1 s, pure Python gets 3, the GEMM 10
ROUNDS = {"pure_python": 3, "peak": 10}
DEFAULT_ROUNDS = 30
PROCESSES = 3
PROCESS_SD = 0.03  # log sd of a process factor: median 0.023-0.051 per case in real pinned quick runs (2026-11-23)
SLOW_PROCESS = (0.05, 1.6)  # (probability, factor): a process that ran through a neighbour's burst
N_TEST = 10000


def true_time(impl: str, model: str, phase: str, batch: int) -> float:
    """A per-call time in seconds with a fixed overhead part (what small batches see)."""
    per_sample = 2e-5 * MODELS[model] * PHASES[phase] * IMPL_SPEED[impl]
    overhead = {"keras": 4e-4, "torch": 6e-5, "numba": 1e-5}.get(impl, 2e-5)
    return overhead + per_sample * batch


def rounds(rng: np.random.Generator, t: float, n: int) -> list[float]:
    noise = rng.lognormal(0.0, 0.08, n)
    spikes = np.where(rng.random(n) < 0.1, rng.uniform(1.5, 3.0, n), 1.0)
    return (t * noise * spikes).tolist()


def synthetic_run(run_dir, seed: int, **kw):
    """Write run.json + results.jsonl of a fake run (``synthetic_records``); returns the dir."""
    meta, recs = synthetic_records(run_dir.name, seed, **kw)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / RUN_FILE).write_text(json.dumps(meta))
    append_records(run_dir, recs)
    return run_dir


def synthetic_records(
    run_id: str,
    seed: int,
    machine: float = 1.0,
    slow: dict[str, float] | None = None,
    broken: tuple[str, ...] = (),
    acc_drop: dict[str, float] | None = None,
    crash: tuple[str, ...] = (),
    schema_version: int | None = None,
    impls: tuple[str, ...] = IMPLS,
    processes: int = PROCESSES,
):
    """(run.json dict, records) of a fake run; ``processes=6``: a baseline merged from two runs
    (``bench.judge.baseline``)."""
    rng = np.random.default_rng(seed)
    slow, acc_drop = slow or {}, acc_drop or {}
    meta = {"run_id": run_id, "profile": "quick", "schema_version": SCHEMA_VERSION}
    meta["env"] = {"cpu_model": "Synthetic CPU", "cores": 2, "threads": 2, "blas": "openblas", "gpu": None}
    meta["env"]["versions"] = {"numpy": np.__version__}
    meta["git_commit"] = "deadbeef"
    common = {"run_id": run_id, "dtype": "float32"}
    recs = []
    for when in ("before", "after"):
        t = 0.3 * machine * rng.lognormal(0.0, PROCESS_SD)
        recs.append(make_record("peak", gemm_n=2048, gflops=50.0 / machine, median_s=t, when=when, **common))
        recs[-1]["samples_s"] = rounds(rng, t, ROUNDS["peak"])
    for name, reason in SKIPPED.items():
        recs.append(make_record("availability", impl=name, available=False, reason=reason, requires="gpu", **common))
    for impl in impls:
        recs.append(make_record("availability", impl=impl, available=True, reason="", requires="", **common))
        recs.append(make_record("setting", impl=impl, key="threads", value=2, **common))
        factor = machine * slow.get(impl, 1.0)
        for model in MODELS:
            recs += _agreement(impl, model, impl in broken, common)
            if impl in crash:
                recs.append(
                    make_record(
                        "error",
                        impl=impl,
                        model=model,
                        phase="speed",
                        status="crash",
                        error="Traceback ...\nSegmentation fault",
                        **common,
                    )
                )
                continue
            recs += _speed(rng, impl, model, factor, impl not in broken, common, processes)
            recs += _accuracy(rng, impl, model, acc_drop.get(impl, 0.0), common)
    recs.append(
        make_record("compile", impl="numba", model="mlp", phase="train_step", cold_s=2.1, steady_s=1e-3, **common)
    )
    recs.append(
        make_record(
            "error",
            impl="pure_python",
            model="cnn",
            phase="accuracy",
            status="skipped",
            error="budget: extrapolated only",
            **common,
        )
    )
    if schema_version is not None:
        for r in recs:
            r["schema_version"] = schema_version
    return meta, recs


def _agreement(impl, model, broken, common):
    out = []
    for phase, tensors in {"forward": ["probs"], "grad": ["0.W", "0.b", "2.W"], "params": ["0.W"]}.items():
        for t in tensors:
            rel = 0.3 if (broken and phase == "grad" and t == "2.W") else 1e-7
            out.append(
                make_record(
                    "agreement",
                    impl=impl,
                    model=model,
                    tensor=t,
                    phase=phase,
                    max_abs=rel,
                    max_rel=rel,
                    tol=1e-4,
                    ok=rel <= 1e-4,
                    first_divergent_layer=2 if rel > 1e-4 else None,
                    **common,
                )
            )
    return out


def _speed(rng, impl, model, factor, validated, common, processes=PROCESSES):
    """One record per (process, phase, batch); each worker process draws its own factor."""
    out = []
    for process in range(1 if impl == "pure_python" else processes):
        pf = factor * rng.lognormal(0.0, PROCESS_SD) * (SLOW_PROCESS[1] if rng.random() < SLOW_PROCESS[0] else 1.0)
        for phase in PHASES:
            for batch in BATCHES:
                s = rounds(rng, true_time(impl, model, phase, batch) * pf, ROUNDS.get(impl, DEFAULT_ROUNDS))
                med = float(np.median(s))
                out.append(
                    make_record(
                        "speed", impl=impl, model=model, phase=phase, batch_size=batch, rounds=len(s),
                        median_s=med, iqr_s=float(np.subtract(*np.percentile(s, [75, 25]))), samples_s=s,
                        samples_per_s=batch / med, gflops=1.0, validated=validated, process=process, **common,
                    )
                )  # fmt: skip
    return out


def _accuracy(rng, impl, model, drop, common):
    out = []
    for epoch in (1, 2):
        p = {"mlp": 0.95, "cnn": 0.975}[model] + 0.005 * epoch - drop
        acc = rng.binomial(N_TEST, p) / N_TEST
        out.append(
            make_record(
                "accuracy",
                impl=impl,
                model=model,
                seed=0,
                epoch=epoch,
                train_samples=60000,
                steps=600 * epoch,
                test_acc=acc,
                test_samples=N_TEST,
                epoch_s=1.0,
                target_acc=0.97,
                time_to_target_s=None,
                validated=True,
                **common,
            )
        )
    return out


def run_main(base, cur, *extra) -> int:
    return compare.main([str(base), str(cur), "--bootstrap", "500", *extra])


# ----------------------------------------------------------------------------- tests


def light_frames(records: list[dict]) -> dict[str, pd.DataFrame]:
    """Frames as ``load_run`` gives them, minus env columns and derived speed columns (fast)."""
    by_kind: dict[str, list[dict]] = {}
    for r in records:
        by_kind.setdefault(r["kind"], []).append(r)
    return {k: pd.DataFrame.from_records(v, columns=[*COMMON, *KIND_COLUMNS[k]]) for k, v in by_kind.items()}


def aa_pairs(n: int, first_seed: int = 0, base_processes: int = 2 * PROCESSES) -> tuple[int, float]:
    """n A/A pairs (current on a 1.3x slower or faster machine, the baseline merged from two
    runs as committed baselines are): (pairs with a FAIL verdict, the largest CI low bound of a
    per-implementation geometric-mean row)."""
    cfg = compare.GateConfig(n_boot=400)
    failing, worst = 0, 0.0
    for i in range(first_seed, first_seed + n):
        machine = 1.3 if i % 2 else 1 / 1.3
        b = light_frames(synthetic_records("b", seed=2 * i, processes=base_processes)[1])
        c = light_frames(synthetic_records("c", seed=2 * i + 1, machine=machine)[1])
        tables = compare.compare_frames(b, c, cfg)
        failing += compare.failed(tables)
        sp = tables["speed"]
        worst = max(worst, sp.loc[sp["phase"] == "ALL", "ci_low"].max())
    return failing, worst


def test_aa_pairs_pass():
    failing, worst = aa_pairs(15)
    assert failing == 0 and worst < compare.GateConfig().threshold


@pytest.mark.slow
def test_aa_200_pairs_rarely_fail():
    """200 A/A pairs under the synthetic noise model (3 processes, a 3 % process factor, 5 % of
    processes 1.6x slow; the baseline merged from two runs): a single comparison has a
    false-FAIL rate, and it must stay small: at most 1 % of pairs (measured: 0 of 200, the
    largest CI low bound of an all-cases row 1.197). ``run --gate`` re-measures a speed-only
    failure before it fails (rule 5)."""
    failing, worst = aa_pairs(200, first_seed=1000)
    assert failing <= 2 and worst < compare.GateConfig().threshold


def test_aa_cli_passes(tmp_path, capsys):
    b = synthetic_run(tmp_path / "base", seed=1)
    c = synthetic_run(tmp_path / "cur", seed=2, machine=1.3)
    assert run_main(b, c) == 0
    out = capsys.readouterr().out
    assert "RESULT: PASS" in out and "== speed ==" in out
    assert "skipped now" not in out


@pytest.mark.parametrize(("impl", "factor"), [("numba", 2.0), ("torch", 2.0), ("pure_python", 3.0)])
def test_slowed_implementation_fails(tmp_path, capsys, impl, factor):
    """Pure Python runs in one process with 3 rounds: the gate cannot see its process spread and
    assumes the others' (or ``default_sd``), so it is held to a 3x slowdown, not 2x."""
    b = synthetic_run(tmp_path / "base", seed=1)
    c = synthetic_run(tmp_path / "cur", seed=2, machine=1.3, slow={impl: factor})
    assert run_main(b, c) == 1
    out = capsys.readouterr().out
    assert "RESULT: FAIL" in out and "slower relative to numpy" in out


def test_slowed_numpy_fails_against_gemm(tmp_path, capsys):
    """numpy is the reference for the others; itself it is referred to the GEMM peak."""
    b = synthetic_run(tmp_path / "base", seed=1)
    c = synthetic_run(tmp_path / "cur", seed=2, slow={"numpy": 2.0})
    assert run_main(b, c) == 1
    out = capsys.readouterr().out
    assert "slower relative to gemm" in out


def test_mild_slowdown_below_decision_passes(tmp_path):
    """Negative control of the phase rule: 1.05x relative is below its decision point (1.118)."""
    b = synthetic_run(tmp_path / "base", seed=1)
    c = synthetic_run(tmp_path / "cur", seed=2, slow={"torch": 1.05})
    assert run_main(b, c) == 0


def slow_phase(frames: dict[str, pd.DataFrame], impl: str, phase: str, factor: float) -> dict[str, pd.DataFrame]:
    """``frames`` with every round of ``impl``'s ``phase`` ``factor`` x slower (``bench.measure.inject``'s
    real counterpart slows the calls themselves)."""
    sp = frames["speed"].copy()
    hit = (sp["impl"] == impl) & (sp["phase"] == phase)
    sp.loc[hit, "samples_s"] = sp.loc[hit, "samples_s"].map(lambda s: [factor * x for x in s])
    sp.loc[hit, "median_s"] *= factor
    return frames | {"speed": sp}


@pytest.mark.parametrize("factor", [1.25, 1.5, 2.0])
def test_phase_slowdown_of_one_implementation_fails(factor):
    """What the gate must catch: one implementation's train_step 1.25x (1.5x, 2x) slower. Its
    per-phase row fails by the phase rule (R past the decision point and CI low > 1), in every
    one of 10 seed pairs; the untouched phases do not."""
    cfg = compare.GateConfig(n_boot=400)
    for i in range(10):
        base = light_frames(synthetic_records("b", seed=2 * i, processes=2 * PROCESSES)[1])
        cur = slow_phase(light_frames(synthetic_records("c", seed=2 * i + 1)[1]), "torch", "train_step", factor)
        out = compare.check_speed(base, cur, cfg)
        rows = out[(out["impl"] == "torch") & (out["model"] == "ALL")].set_index("phase")
        assert rows.loc["train_step", "verdict"] == compare.FAIL, (i, rows.loc["train_step"].to_dict())
        assert rows.loc["forward", "verdict"] != compare.FAIL and rows.loc["loss_and_grads", "verdict"] != compare.FAIL


def test_phase_rule():
    """FAIL needs both: beyond noise (CI low > 1) and past the decision point; a wide interval
    is inconclusive, a narrow one below the threshold ok."""
    rule = speed._phase_verdict
    assert rule(1.20, 1.10, 1.30, 1.25, 1.118, "numpy")[0] == compare.FAIL
    assert rule(1.20, 0.95, 1.50, 1.25, 1.118, "numpy")[0] == compare.INCONCLUSIVE  # not beyond noise
    assert rule(1.15, 0.98, 1.24, 1.25, 1.118, "numpy")[0] == compare.INCONCLUSIVE  # past the midpoint: a suspect
    # a confirmation run: past the decision point in both measurements fails, whatever the interval
    assert rule(1.20, 0.95, 1.50, 1.25, 1.118, "numpy", first=1.13)[0] == compare.FAIL
    assert rule(1.20, 0.95, 1.50, 1.25, 1.118, "numpy", first=1.10)[0] == compare.INCONCLUSIVE
    assert rule(1.10, 0.95, 1.30, 1.25, 1.118, "numpy", first=1.40)[0] == compare.INCONCLUSIVE
    assert rule(1.05, 1.01, 1.09, 1.25, 1.118, "numpy")[0] == compare.OK  # beyond noise, but small
    assert rule(1.00, 0.90, 1.10, 1.25, 1.118, "numpy")[0] == compare.OK
    assert rule(0.70, 0.65, 0.75, 1.25, 1.118, "numpy")[0] == compare.NOTE


def test_case_without_numpy_falls_back_to_gemm():
    """Pure Python runs at batch 1 only in the quick profile: referred to the GEMM instead."""
    cfg = compare.GateConfig(n_boot=400)

    def frames(seed, **kw):
        f = light_frames(synthetic_records("r", seed=seed, **kw)[1])
        sp = f["speed"]
        f["speed"] = sp[~((sp["batch_size"] == 1) & (sp["impl"] != "pure_python"))]
        f["speed"] = f["speed"][~((f["speed"]["impl"] == "pure_python") & (f["speed"]["batch_size"] == 64))]
        return f

    same = compare.check_speed(frames(1), frames(2, machine=1.3), cfg)
    pp = same[same["impl"] == "pure_python"]
    # 6 cases (2 models x 3 phases), the ALL row and one row per phase (2 cases each)
    assert (pp["ref"] == "gemm").all() and len(pp) == 6 + 1 + 3 and not (same["verdict"] == "FAIL").any()
    assert set(pp.loc[pp["model"] == "ALL", "phase"]) == {"ALL", "forward", "loss_and_grads", "train_step"}
    slow = compare.check_speed(frames(1), frames(2, machine=1.3, slow={"pure_python": 3.0}), cfg)
    agg = slow[(slow["impl"] == "pure_python") & (slow["phase"] == "ALL")].iloc[0]
    assert agg["verdict"] == "FAIL" and agg["ci_low"] > cfg.threshold
    # its single cases have 3 rounds: they warn, they do not fail alone
    single = set(slow.loc[(slow["impl"] == "pure_python") & (slow["model"] != "ALL"), "verdict"])
    assert single <= {"WARN", "ok", "inconclusive"}


def test_broken_agreement_fails(tmp_path, capsys):
    b = synthetic_run(tmp_path / "base", seed=1)
    c = synthetic_run(tmp_path / "cur", seed=2, broken=("numba",))
    assert run_main(b, c) == 1
    out = " ".join(capsys.readouterr().out.split())  # details are wrapped at 100 columns
    assert "grad:2.W" in out and "first divergent layer 2;" not in out and "first divergent layer 2 " in out


def test_accuracy_drop_fails_and_noise_passes(tmp_path, capsys):
    b = synthetic_run(tmp_path / "base", seed=1)
    assert run_main(b, synthetic_run(tmp_path / "same", seed=3)) == 0
    c = synthetic_run(tmp_path / "cur", seed=2, acc_drop={"keras": 0.03})
    capsys.readouterr()
    assert run_main(b, c) == 1
    assert "below band" in capsys.readouterr().out


def test_accuracy_band_rule():
    """The documented band: 4 sigma of the difference of two binomial estimates + 0.005."""

    def frames(acc):
        r = make_record(
            "accuracy",
            impl="numpy",
            model="mlp",
            dtype="float32",
            seed=0,
            epoch=1,
            test_acc=acc,
            test_samples=10000,
            train_samples=1,
            steps=1,
        )
        return {"accuracy": pd.DataFrame([r])}

    tol = 4 * np.sqrt(2 * 0.97 * 0.03 / 10000) + 0.005
    ok = compare.check_accuracy(frames(0.97), frames(0.97 - tol + 1e-4), compare.GateConfig())
    bad = compare.check_accuracy(frames(0.97), frames(0.97 - tol - 1e-4), compare.GateConfig())
    assert ok["verdict"].tolist() == ["ok"] and bad["verdict"].tolist() == ["FAIL"]
    assert ok["tol"].iloc[0] == pytest.approx(tol)


def test_new_crash_fails_known_skip_warns(tmp_path, capsys):
    b = synthetic_run(tmp_path / "base", seed=1)
    c = synthetic_run(tmp_path / "cur", seed=2, crash=("torch",))
    assert run_main(b, c) == 1
    assert "crash: Segmentation fault (new failure)" in capsys.readouterr().out
    # a crash already in the baseline is a warning, not a failure
    b2 = synthetic_run(tmp_path / "base2", seed=3, crash=("torch",))
    assert run_main(b2, c) == 0


def test_impl_skipped_now_warns_not_run_notes(tmp_path, capsys):
    b = synthetic_run(tmp_path / "base", seed=1)
    c = synthetic_run(tmp_path / "cur", seed=2, impls=("pure_python", "numpy", "numba", "torch"))
    append_records(
        c,
        [
            make_record(
                "availability",
                impl="keras",
                available=False,
                reason="No module named 'keras'",
                run_id="cur",
                dtype="float32",
            )
        ],
    )
    assert run_main(b, c) == 0
    out = capsys.readouterr().out
    assert "skipped now: No module named 'keras'" in out


def test_newer_schema_exits_2(tmp_path, capsys):
    b = synthetic_run(tmp_path / "base", seed=1)
    c = synthetic_run(tmp_path / "cur", seed=2, schema_version=SCHEMA_VERSION + 1)
    assert run_main(b, c) == 2
    err = capsys.readouterr().err
    assert "newer nnbench" in err and "current" in err


def test_missing_baseline_exits_2(tmp_path, capsys):
    c = synthetic_run(tmp_path / "cur", seed=2)
    assert run_main(tmp_path / "nope", c) == 2
    assert "baseline: run directory not found" in capsys.readouterr().err


def test_not_a_run_dir_exits_2(tmp_path, capsys):
    c = synthetic_run(tmp_path / "cur", seed=2)
    (tmp_path / "empty").mkdir()
    assert run_main(tmp_path / "empty", c) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_unknown_impl_exits_2(tmp_path, capsys):
    b = synthetic_run(tmp_path / "base", seed=1)
    c = synthetic_run(tmp_path / "cur", seed=2)
    assert run_main(b, c, "--impls", "numpy,tensorflw") == 2
    assert "unknown implementation tensorflw" in capsys.readouterr().err
    assert run_main(b, c, "--impls", "numpy,numba", "--models", "mlp") == 0


def test_latest_pointer_file_and_symlink(tmp_path):
    b = synthetic_run(tmp_path / "base", seed=1)
    synthetic_run(tmp_path / "run-2", seed=2)
    (tmp_path / "latest.txt").write_text("run-2\n")
    (tmp_path / "latest").symlink_to("run-2")
    assert run_main(b, tmp_path / "latest.txt") == 0
    assert run_main(b, tmp_path / "latest") == 0


def _gate_one_case(base: list, cur: list, ref_b: list, ref_c: list, row: str = "mlp", first=None, **cfg) -> pd.Series:
    """check_speed on one torch case against numpy, from per-process round arrays: the case's row
    (``row="mlp"``) or torch's train_step row (``row="ALL"``, judged by the phase rule)."""

    def frames(x, r):
        rows = [
            make_record(
                "speed",
                impl=impl,
                model="mlp",
                dtype="float32",
                phase="train_step",
                batch_size=50,
                process=i,
                samples_s=list(a),
                median_s=float(np.median(a)),
            )  # fmt: skip
            for impl, sets in (("torch", x), ("numpy", r))
            for i, a in enumerate(sets)
        ]
        return {"speed": pd.DataFrame(rows)}

    t = compare.check_speed(frames(base, ref_b), frames(cur, ref_c), compare.GateConfig(n_boot=1000, **cfg), first)
    t = t[(t["impl"] == "torch") & (t["model"] == row)]
    return t[t["phase"] == "train_step"].iloc[0]


def test_median_of_process_medians_ignores_a_slow_process_and_catches_real_slowdowns():
    """One of three worker processes runs 1.6x slow (this machine kind does that): the median
    of process medians ignores it and the gate does not fail. With one process per case the
    gate cannot know the process-to-process spread: it assumes ``default_sd`` and does not fail
    that process; negative control: told the spread is 0, it fails it (the process term is what
    protects). Real slowdowns of every process (1.6x, 2x) fail: a bootstrap that redrew the 3
    processes was too wide to fail even 2x on real runs."""
    rng = np.random.default_rng(0)

    def proc(scale):
        return rng.lognormal(np.log(scale), 0.03, 60)

    ref = [proc(1.0) for _ in range(3)]
    row = _gate_one_case([proc(1.0) for _ in range(3)], [proc(1.0), proc(1.6), proc(1.0)], ref, ref)
    assert row["verdict"] != "FAIL" and row["R"] < 1.1 and row["n_samples"] == "3x60/3x60/3x60/3x60"
    one = _gate_one_case([proc(1.0)], [proc(1.6)], ref[:1], ref[:1])
    assert one["verdict"] != "FAIL" and one["R"] > 1.5
    blind = _gate_one_case([proc(1.0)], [proc(1.6)], ref[:1], ref[:1], default_sd=0.0, min_sd=0.0)
    assert blind["verdict"] == "FAIL"  # negative control: no process term
    for factor in (1.6, 2.0):
        slow = _gate_one_case([proc(1.0) for _ in range(3)], [proc(factor) for _ in range(3)], ref, ref)
        assert slow["verdict"] == "FAIL" and slow["R"] == pytest.approx(factor, rel=0.05), factor


def test_speed_only_failures_names_what_to_re_measure(tmp_path):
    """The gate's confirmation step re-measures a speed-only failure; any other failure
    (here: broken agreement) is final and returns None."""
    b = synthetic_run(tmp_path / "base", seed=1)
    slow = synthetic_run(tmp_path / "slow", seed=2, slow={"torch": 2.0})
    suspects = compare.speed_only_failures(str(b), str(slow))
    assert suspects and set(suspects) == {"torch"} and suspects["torch"]
    same = synthetic_run(tmp_path / "same", seed=3)
    assert compare.speed_only_failures(str(b), str(same)) == {}
    broken = synthetic_run(tmp_path / "broken", seed=4, broken=("numba",), slow={"torch": 2.0})
    assert compare.speed_only_failures(str(b), str(broken)) is None


def test_suspect_is_re_measured_and_fails_only_when_it_reproduces():
    """Real quick runs in a noisy minute: a true 1.25x train_step slowdown with R 1.14-1.30 whose
    interval reached below 1 (two of torch's three processes through a neighbour's burst widen
    the process term). Such a row is a suspect: inconclusive, and ``run --gate`` re-measures it;
    past the decision point in the first measurement too, it fails as reproduced. Negative
    controls: a first measurement below the decision point, and no slowdown now."""
    rng = np.random.default_rng(1)

    def proc(scale):
        return rng.lognormal(np.log(scale), 0.03, 60)

    ref, base = [proc(1.0) for _ in range(3)], [proc(1.0) for _ in range(3)]
    noisy = [proc(1.25), proc(1.6), proc(1.9)]
    key = ("torch", "float32", "train_step")
    row = _gate_one_case(base, noisy, ref, ref, row="ALL")
    assert row["verdict"] == compare.INCONCLUSIVE and row["suspect"] and row["ci_low"] < 1.0
    assert row["R"] == pytest.approx(1.25, rel=0.05)
    again = _gate_one_case(base, noisy, ref, ref, row="ALL", first={key: 1.2})
    assert again["verdict"] == compare.FAIL and "reproduced" in again["detail"]
    assert _gate_one_case(base, noisy, ref, ref, row="ALL", first={key: 1.05})["verdict"] == compare.INCONCLUSIVE
    calm = _gate_one_case(base, [proc(1.0), proc(1.6), proc(1.9)], ref, ref, row="ALL", first={key: 1.3})
    assert calm["verdict"] != compare.FAIL and not calm["suspect"]


def test_speed_only_failures_includes_suspects(tmp_path, monkeypatch):
    """A suspect row (not failing) is re-measured like a failure: its implementation and models."""
    b, c = synthetic_run(tmp_path / "base", seed=1), synthetic_run(tmp_path / "cur", seed=2)
    real = compare.compare_frames

    def with_suspect(base, cur, cfg=None, first=None, speed_note=None):
        tables = real(base, cur, cfg, first, speed_note)
        sp = tables["speed"]
        hit = (sp["impl"] == "numba") & (sp["model"] == "ALL") & (sp["phase"] == "train_step")
        tables["speed"] = sp.assign(suspect=hit, verdict=sp["verdict"].where(~hit, compare.INCONCLUSIVE))
        return tables

    assert compare.speed_only_failures(str(b), str(c)) == {}
    monkeypatch.setattr(compare, "compare_frames", with_suspect)
    assert compare.speed_only_failures(str(b), str(c)) == {"numba": {"mlp", "cnn"}}
    # a current run of the cnn only (run --models cnn): the mlp, only in the baseline, is not re-measured
    recs = [r for r in read_records(c) if r.get("model") != "mlp"]
    (c / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    assert compare.speed_only_failures(str(b), str(c)) == {"numba": {"cnn"}}


def test_first_measurement_option(tmp_path, capsys):
    """``compare --first-measurement RUN`` (what ``run --gate``'s confirmation passes): named in the
    output; a run dir that does not exist is bad input (exit 2)."""
    b, c, f = (synthetic_run(tmp_path / n, seed=i) for i, n in enumerate(("base", "cur", "first")))
    assert run_main(b, c, "--first-measurement", str(f)) == 0
    assert f"first measurement: {f}" in capsys.readouterr().out
    assert run_main(b, c, "--first-measurement", str(tmp_path / "nope")) == 2


def test_wide_interval_is_inconclusive_never_ok():
    """Seen: R=9.23, CI 0.85-13.0 printed "ok". An interval that contains the threshold
    cannot decide; the positive controls: a narrow one below it is ok, one above fails."""
    assert speed._verdict(0.85, 13.0, 1.5, "numpy")[0] == compare.INCONCLUSIVE
    assert speed._verdict(0.9, 1.1, 1.5, "numpy")[0] == compare.OK
    assert speed._verdict(1.6, 1.9, 1.5, "numpy")[0] == compare.FAIL
    tables = {"speed": pd.DataFrame({"verdict": [compare.OK, compare.INCONCLUSIVE]})}
    line = compare.verdict_line(tables)
    assert line.startswith("RESULT: PASS") and "1 inconclusive" in line and not compare.failed(tables)


def test_gate_that_compared_nothing_fails(tmp_path, capsys):
    b = synthetic_run(tmp_path / "base", seed=1, impls=("numpy",))
    c = synthetic_run(tmp_path / "cur", seed=2, impls=("torch",))
    assert run_main(b, c) == 1
    assert "compared nothing" in capsys.readouterr().out
    # positive control: overlapping runs are compared and pass
    assert run_main(b, synthetic_run(tmp_path / "same", seed=3, impls=("numpy",))) == 0


def test_a_gate_that_found_only_speedups_compared_something():
    """A speed row faster beyond noise is a judgement (a note saying so): a gate whose every row
    is such a note compared its runs and passes. Negative control: notes for rows left ungated
    (another machine kind) are not a comparison, and that gate fails as having compared nothing."""
    faster = {"speed": pd.DataFrame({"verdict": [compare.NOTE], "detail": [speed.FASTER]})}
    assert not compare.compared_nothing(faster) and not compare.failed(faster)
    assert compare.verdict_line(faster).startswith("RESULT: PASS")
    ungated = {"speed": compare.ungated(faster["speed"], "no baseline of this machine kind")}
    assert "would be note" in ungated["speed"]["detail"].iloc[0]
    assert compare.compared_nothing(ungated) and compare.failed(ungated)


def test_accuracy_at_chance_is_not_gated():
    def frames(acc):
        r = make_record("accuracy", impl="numpy", model="mlp", dtype="float32", seed=0, epoch=1, test_acc=acc,
                        test_samples=1000, train_samples=1, steps=1)  # fmt: skip
        return {"accuracy": pd.DataFrame([r])}

    cfg = compare.GateConfig()
    chance = compare.check_accuracy(frames(0.13), frames(0.10), cfg)
    assert chance["verdict"].tolist() == ["note"] and "baseline at chance" in chance["detail"].iloc[0]
    # positive control: a baseline clear of chance is gated, and a collapse to chance fails
    gated = compare.check_accuracy(frames(0.60), frames(0.10), cfg)
    assert gated["verdict"].tolist() == ["FAIL"]


def test_required_backend_unavailable_fails(tmp_path, monkeypatch):
    b = synthetic_run(tmp_path / "base", seed=1)
    cur = light_frames(synthetic_records("cur", seed=2)[1])
    av = cur["availability"]
    cur["availability"] = av.assign(available=av["available"].where(av["impl"] != "torch", False))
    base = compare._load("baseline", str(b))
    assert not (compare.check_status(base, cur, [])["verdict"] == "FAIL").any()  # optional: a warning
    rows = compare.check_status(base, cur, ["numpy", "torch"])
    assert rows.loc[rows["verdict"] == "FAIL", "impl"].tolist() == ["torch"]


def test_phase_aggregate_is_not_diluted_by_untouched_phases():
    """A slowdown of torch's train_step alone (1.6x, every process): the per-phase aggregate
    (model ALL, phase train_step) sees all of it, where the all-cases row averages it with the
    forward and loss_and_grads cases it did not touch. Negative control: the untouched phases'
    aggregates stay near 1."""
    cfg = compare.GateConfig(n_boot=400)
    base = light_frames(synthetic_records("b", seed=1)[1])
    cur = light_frames(synthetic_records("c", seed=2)[1])
    out = compare.check_speed(base, slow_phase(cur, "torch", "train_step", 1.6), cfg)
    agg = out[(out["impl"] == "torch") & (out["model"] == "ALL")].set_index("phase")
    assert set(agg.index) == {"ALL", "forward", "loss_and_grads", "train_step"}
    assert 1.35 < agg.loc["train_step", "R"] < 1.9, agg["R"]
    assert agg.loc["train_step", "ci_low"] > agg.loc["ALL", "ci_low"]
    assert agg.loc["train_step", "R"] > agg.loc["ALL", "R"] * 1.1
    for phase in ("forward", "loss_and_grads"):
        assert 0.75 < agg.loc[phase, "R"] < 1.33 and agg.loc[phase, "verdict"] != compare.FAIL, phase


def test_a_backend_the_baseline_lacks_is_listed_not_gated(tmp_path):
    """Speed cases of a backend the baseline predates are rows saying so, never left out silently;
    they do not count as compared (the gate still judges the others)."""
    base = synthetic_run(tmp_path / "b", seed=1, impls=("numpy", "torch"))
    cur = synthetic_run(tmp_path / "c", seed=2, impls=("numpy", "torch", "numba"))
    b, c, _ = compare.load_pair(str(base), str(cur))
    sp = compare.compare_frames(b, c)["speed"]
    new = sp[sp["impl"] == "numba"]
    assert len(new) and (new["verdict"] == "note").all()
    assert new["detail"].str.contains("not in the baseline").all()
    assert (sp[sp["impl"] == "torch"]["verdict"] != "note").any()  # the others are judged
