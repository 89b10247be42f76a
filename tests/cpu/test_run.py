"""The benchmark run (``bench.run``, ``bench.measure.run_cases``, ``bench.measure.spawn``,
``bench.measure.worker``): isolation, resume, schema, progress, bad input.

Fake backends are written to a temporary module directory (on ``PYTHONPATH`` so the worker
processes import them too) and registered by monkeypatching ``backends._extra``
(the run stores the registry in ``run.json`` and every worker applies it).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from bench import run as brun
from bench.measure.derived import fill_derived
from bench.measure.results import COMMON, EXIT_CASES_FAILED, KIND_COLUMNS, SCHEMA_VERSION, make_record, read_records
from bench.measure.run_state import done_parts, write_records_atomic
from bench.measure.spawn import WorkerResult, failure
from bench.plan import backends

REPO = Path(__file__).resolve().parents[2]

FAKES = {
    "fake_crash": """
        import os
        REQUIRES = ()
        def available(): return True, "fake: aborts in build"
        def settings(): return {"device": "cpu"}
        def build(spec, params, dtype):
            os.abort()
    """,
    "fake_hang": """
        import os, time
        REQUIRES = ()
        def available(): return True, "fake: hangs in build"
        def settings(): return {"device": "cpu"}
        def build(spec, params, dtype):
            if os.environ.get("FAKE_HANG_PIDFILE"):
                with open(os.environ["FAKE_HANG_PIDFILE"], "w") as f:
                    f.write(str(os.getpid()))
            time.sleep(600)
    """,
    "fake_oom": """
        REQUIRES = ()
        def available(): return True, "fake: out of memory in build"
        def settings(): return {}
        def build(spec, params, dtype):
            raise MemoryError("Unable to allocate 512 GiB for an array")
    """,
    "fake_unavail": """
        REQUIRES = ("gpu",)
        def available(): return False, "fake: needs a flux capacitor"
        def settings(): return {}
        def build(spec, params, dtype):
            raise AssertionError("never built")
    """,
    "fake_cache": """
        import os, time
        from implementations.numpy.model import XpModel
        REQUIRES = ()
        def available(): return True, "fake: numpy with a slow first build unless its disk cache is warm"
        def settings(): return {}
        def build(spec, params, dtype):
            marker = os.path.join(os.environ["FAKE_CACHE_DIR"], "compiled")
            if not os.path.exists(marker):
                time.sleep(0.5)  # "compiling"
                os.makedirs(os.environ["FAKE_CACHE_DIR"], exist_ok=True)
                open(marker, "w").close()
            return XpModel(spec, params, dtype)
    """,
    "fake_step_raises": """
        from implementations.numpy.model import XpModel
        REQUIRES = ()
        def available(): return True, "fake: numpy whose train_step raises"
        def settings(): return {}
        class Broken(XpModel):
            def train_step(self, x, y):
                raise RuntimeError("the fused kernel is broken")
        def build(spec, params, dtype):
            return Broken(spec, params, dtype)
    """,
    "fake_nondet": """
        import os
        from implementations.numpy.model import XpModel
        REQUIRES = ()
        def available(): return True, "fake: numpy whose dropout masks come from the process id"
        def settings(): return {}
        def build(spec, params, dtype, seed=0):
            return XpModel(spec, params, dtype, seed=os.getpid())
    """,
    "fake_wrong": """
        from implementations.numpy.model import XpModel
        REQUIRES = ()
        def available(): return True, "fake: numpy with a wrong forward"
        def settings(): return {"device": "cpu"}
        class Wrong(XpModel):
            def forward(self, x):
                return super().forward(x) * 0.5
        def build(spec, params, dtype):
            return Wrong(spec, params, dtype)
    """,
}

PROFILE = """
    name = "test"
    models = ["tiny-mlp"]
    dtypes = ["float32"]
    seeds = [0]
    parts = {parts}
    timeout_s = 120
    [agreement]
    batch = 4
    steps = 1
    [speed]
    phases = ["forward", "loss_and_grads", "train_step"]
    batch_sizes = [4]
    warmup_rounds = 1
    min_rounds = 3
    max_rounds = 5
    round_min_s = 0.0
    target_s = 0.01
    [peak]
    gemm_n = 64
    rounds = 3
    [accuracy]
    epochs = 1
    train_samples = 400
    test_samples = 200
    eval_batch = 100
    targets = {{ tiny-mlp = 0.05 }}
    [overrides.fake_hang]
    timeout_s = 4
    [overrides.fake_cache]
    cache_env = "FAKE_CACHE_DIR"
    [overrides.pure_python.accuracy]
    max_steps = 2
    test_samples = 20
"""


@pytest.fixture
def fakes(tmp_path, monkeypatch):
    mods = tmp_path / "fakemods"
    mods.mkdir()
    for name, src in FAKES.items():
        (mods / f"{name}.py").write_text(textwrap.dedent(src))
    monkeypatch.syspath_prepend(str(mods))
    monkeypatch.setenv("PYTHONPATH", str(mods))
    for name in FAKES:
        monkeypatch.setitem(backends._extra, name, name)
    return mods


def write_profile(tmp_path: Path, parts: str = '["agreement", "speed"]') -> Path:
    p = tmp_path / "test-profile.toml"
    p.write_text(textwrap.dedent(PROFILE.format(parts=parts)))
    return p


def run_main(*args: str) -> int:
    return brun.main([*args, "--no-report", "--threads", "1"])


def check_schema(records: list[dict]) -> None:
    for r in records:
        assert r["schema_version"] == SCHEMA_VERSION
        assert set(r) <= set(COMMON) | set(KIND_COLUMNS[r["kind"]]), r


def errors(records: list[dict]) -> dict[str, set[tuple[str, str]]]:
    out: dict[str, set[tuple[str, str]]] = {}
    for r in records:
        if r["kind"] == "error":
            out.setdefault(r["impl"], set()).add((r["phase"], r["status"]))
    return out


def test_failures_recorded_and_the_others_carry_on(tmp_path, fakes, capsys):
    prof = write_profile(tmp_path)
    impls = "fake_unavail,fake_crash,numpy,fake_hang,fake_oom,fake_wrong"
    assert run_main("--profile", str(prof), "--impls", impls, "--out", str(tmp_path / "out")) == EXIT_CASES_FAILED
    run_dir = (tmp_path / "out" / "latest").resolve()
    recs = read_records(run_dir)
    check_schema(recs)
    err = errors(recs)
    assert err["fake_unavail"] == {("availability", "skipped")}
    assert {s for _, s in err["fake_crash"]} == {"crash"}
    assert ("speed", "crash") in err["fake_crash"] and ("agreement", "crash") in err["fake_crash"]
    assert {s for _, s in err["fake_hang"]} == {"timeout"}
    assert ("speed", "oom") in err["fake_oom"] and ("agreement", "oom") in err["fake_oom"]
    assert err["fake_wrong"] == {("agreement", "disagrees")}
    assert "numpy" not in err  # negative control: the healthy backend has no error
    crash = next(r for r in recs if r["impl"] == "fake_crash" and r["kind"] == "error")
    assert "SIGABRT" in crash["error"]
    avail = {r["impl"]: r["available"] for r in recs if r["kind"] == "availability"}
    assert avail["fake_unavail"] is False and avail["numpy"] is True
    speed = {(r["impl"], r["phase"]): r for r in recs if r["kind"] == "speed"}
    assert {p for i, p in speed if i == "numpy"} == {"forward", "loss_and_grads", "train_step"}
    for phase in ("forward", "loss_and_grads", "train_step"):
        npy, wrong = speed[("numpy", phase)], speed[("fake_wrong", phase)]
        assert npy["validated"] is True and wrong["validated"] is False
        assert npy["speedup_vs_numpy"] == pytest.approx(1.0)
        assert len(npy["samples_s"]) == npy["rounds"] >= 3
        assert npy["median_s"] > 0 and npy["gflops"] > 0 and npy["frac_peak"] > 0
        # NumPy performs the direct count: its effective rate is its rate
        assert npy["gflops_model"] == pytest.approx(npy["gflops"]) and npy["frac_peak_model"] == pytest.approx(
            npy["frac_peak"]
        )
    assert any(r["kind"] == "peak" for r in recs)
    assert any(r["kind"] == "compile" and r["impl"] == "numpy" and r["phase"] == "forward" for r in recs)
    assert any(r["kind"] == "setting" and r["impl"] == "numpy" and r["key"] == "harness_threads" for r in recs)
    bench_json = json.loads((run_dir / "benchmarks" / "numpy-tiny-mlp-float32.json").read_text())
    assert len(bench_json["benchmarks"]) == 3 and bench_json["benchmarks"][0]["stats"]["data"]
    printed = capsys.readouterr()  # progress on stdout (plain lines: not a terminal), nothing on stderr
    assert "numpy tiny-mlp float32 | speed train_step b=4 |" in printed.out and "est. left" in printed.out
    assert "fake_hang tiny-mlp float32: TIMEOUT" in printed.out
    assert printed.err == ""
    assert "fake_unavail" in printed.out and "error  fake_unavail" not in printed.out  # a skip is no error
    assert max(len(line) for line in printed.out.splitlines() if str(tmp_path) not in line) <= 100


def test_speed_cases_run_in_several_processes(tmp_path, fakes):
    """``speed.processes = 3``: each speed case is measured in 3 fresh workers, process-major
    (every case's 2nd before any 3rd); compile records only from the first; the case's
    speedup uses the median of process medians; stability rows come out per case."""
    from bench.measure.frames import load_run
    from bench.measure.stability import case_table
    from bench.report.tables import determinism

    prof = write_profile(tmp_path)
    prof.write_text(prof.read_text().replace("[speed]\n", "[speed]\nprocesses = 3\n"))
    impls = "numpy,pure_python,fake_nondet"
    assert run_main("--profile", str(prof), "--impls", impls, "--out", str(tmp_path / "out")) == 0
    run_dir = (tmp_path / "out" / "latest").resolve()
    recs = read_records(run_dir)
    check_schema(recs)
    speed = [r for r in recs if r["kind"] == "speed"]
    for impl in ("numpy", "pure_python"):
        procs = sorted(r["process"] for r in speed if r["impl"] == impl and r["phase"] == "train_step")
        assert procs == [0, 1, 2], (impl, procs)
        assert all(r["loadavg"] >= 0 for r in speed if r["impl"] == impl)
    assert len([r for r in recs if r["kind"] == "compile" and r["impl"] == "numpy"]) == 4  # build + 3 phases, once
    parts = [json.loads(line)["part"] for line in (run_dir / "cases.jsonl").read_text().splitlines()]
    assert parts.index("speed-p1") < parts.index("speed-p2") and parts.count("speed-p1") == 3
    assert all(r["speedup_vs_numpy"] == pytest.approx(1.0) for r in speed if r["impl"] == "numpy")
    cases = case_table(pd.DataFrame(speed), cores=2, processes=3)
    assert len(cases) == 9 and set(cases["processes"]) == {3}
    # the same seed in three fresh processes: the same bits, unless the masks follow the process
    same = determinism(load_run(run_dir))
    assert same[("numpy", "tiny-mlp", "float32")].startswith("yes (bit-identical in 3 processes, 3 steps)")
    assert same[("pure_python", "tiny-mlp", "float32")].startswith("yes")
    assert same[("fake_nondet", "tiny-mlp", "float32")].startswith("no (3 different results in 3 processes")
    # resuming a finished run measures nothing again
    assert brun.main(["--resume", str(run_dir), "--no-report", "--threads", "1"]) == 0
    assert len([r for r in read_records(run_dir) if r["kind"] == "speed"]) == len(speed)


def test_interrupted_run_kills_its_worker_and_resumes(tmp_path, fakes):
    """SIGTERM (a cancelled CI job) during a hanging worker: exit 130, the worker is killed, what
    finished is kept, and --resume runs only the rest."""
    prof = write_profile(tmp_path)
    out, pidfile = tmp_path / "out", tmp_path / "hang.pid"
    code = (
        "import sys; from bench.plan import backends; backends.register('fake_hang', 'fake_hang');"
        "from bench.run import main; sys.exit(main(sys.argv[1:]))"
    )
    argv = [sys.executable, "-c", code, "--profile", str(prof), "--impls", "numpy,fake_hang", "--out", str(out),
            "--no-report", "--threads", "1"]  # fmt: skip
    env = {**os.environ, "FAKE_HANG_PIDFILE": str(pidfile)}
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env, cwd=str(REPO))
    deadline = time.monotonic() + 120
    while not pidfile.exists() or not pidfile.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.1)
    worker = int(pidfile.read_text())
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 130
    assert "--resume" in proc.stderr.read()
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)
    run_dir = next(p for p in out.iterdir() if p.is_dir())
    done = done_parts(run_dir)
    assert ("numpy", "tiny-mlp", "float32", "speed") in done
    assert not any(k[0] == "fake_hang" and k[3] != "settings" for k in done)
    n_speed = sum(r["kind"] == "speed" for r in read_records(run_dir))
    pidfile.unlink()
    assert run_main("--out", str(out), "--resume", str(run_dir)) == EXIT_CASES_FAILED  # fake_hang times out
    recs = read_records(run_dir)
    assert sum(r["kind"] == "speed" for r in recs) == n_speed  # numpy not re-run
    assert ("speed", "timeout") in errors(recs)["fake_hang"]


def test_compile_cold_and_warm_cache(tmp_path, fakes):
    prof = write_profile(tmp_path)
    assert run_main("--profile", str(prof), "--impls", "fake_cache", "--out", str(tmp_path / "out")) == 0
    run_dir = (tmp_path / "out" / "latest").resolve()
    comp = {r["phase"]: r for r in read_records(run_dir) if r["kind"] == "compile"}
    assert set(comp) == {"build", "forward", "loss_and_grads", "train_step"}
    assert comp["build"]["cold_s"] >= 0.5 > comp["build"]["warm_cache_s"]  # an empty cache first, then warm
    assert comp["forward"]["steady_s"] > 0 and comp["build"]["steady_s"] is None
    # the per-case cache served the cold/warm measurement above and is not left in the report
    assert not (run_dir / "cache").exists()


def test_schema_check_has_teeth():
    with pytest.raises(ValueError, match="unknown columns"):
        make_record("speed", impl="numpy", not_a_column=1)
    with pytest.raises(ValueError, match="unknown record kind"):
        make_record("speeed", impl="numpy")


def test_resume_skips_finished_parts(tmp_path, capsys):
    prof = write_profile(tmp_path)
    out = tmp_path / "out"
    assert run_main("--profile", str(prof), "--impls", "numpy", "--out", str(out)) == 0
    run_dir = (out / "latest").resolve()
    before = read_records(run_dir)
    n_agree = sum(r["kind"] == "agreement" for r in before)
    # simulate an interruption during speed: its done-mark is gone and a partial record remains
    cases = run_dir / "cases.jsonl"
    lines = [ln for ln in cases.read_text().splitlines() if '"part": "speed"' not in ln]
    cases.write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert run_main("--profile", str(prof), "--out", str(out), "--resume", str(run_dir)) == 0
    after = read_records(run_dir)
    check_schema(after)
    out_text = capsys.readouterr().out
    assert "| agreement |" not in out_text and "speed forward b=4" in out_text  # only speed re-ran
    assert sum(r["kind"] == "agreement" for r in after) == n_agree
    assert sum(r["kind"] == "speed" for r in after) == 3  # old partial rows dropped, not duplicated
    assert all(r["validated"] is True for r in after if r["kind"] == "speed")  # from the earlier agreement
    # resuming a finished run runs no case at all (and --resume alone means <out>/latest)
    assert run_main("--out", str(out), "--resume") == 0
    assert "| speed" not in capsys.readouterr().out
    assert len(read_records(run_dir)) == len(after)
    assert sorted(p.name for p in out.iterdir()) == sorted([run_dir.name, "latest"])


def test_accuracy_records_with_budget(tmp_path):
    from bench.plan.data import MnistError
    from bench.plan.inputs import mnist_arrays

    try:
        mnist_arrays()
    except MnistError as e:
        pytest.skip(f"MNIST not available here: {e}")
    prof = write_profile(tmp_path, parts='["accuracy"]')
    assert run_main("--profile", str(prof), "--impls", "numpy,pure_python", "--out", str(tmp_path / "o")) == 0
    recs = read_records((tmp_path / "o" / "latest").resolve())
    check_schema(recs)
    acc = {r["impl"]: r for r in recs if r["kind"] == "accuracy"}
    assert set(acc) == {"numpy", "pure_python"}, errors(recs)
    npy, pp = acc["numpy"], acc["pure_python"]
    assert npy["train_samples"] == 400 and npy["steps"] == 400 // 8 and npy["test_samples"] == 200
    assert 0.0 <= npy["test_acc"] <= 1.0 and npy["test_loss"] > 0 and npy["epoch_s"] > 0
    assert npy["extrapolated_epoch_s"] == pytest.approx(npy["epoch_s"] * 60000 / 400)
    assert pp["steps"] == 2 and pp["train_samples"] == 16 and pp["test_samples"] == 20
    assert npy["validated"] is None  # no agreement in this profile: neither validated nor refuted


def test_seeds_option_and_a_resumed_accuracy_part_keeps_its_finished_seeds(tmp_path):
    """``--seeds 0-2`` trains three seeds; a part interrupted after two of them trains the third
    alone on ``--resume`` (each seed's records are written when it ends)."""
    from bench.plan.data import MnistError
    from bench.plan.inputs import mnist_arrays

    try:
        mnist_arrays()
    except MnistError as e:
        pytest.skip(f"MNIST not available here: {e}")
    prof = write_profile(tmp_path, parts='["accuracy"]')
    assert run_main("--profile", str(prof), "--impls", "numpy", "--seeds", "0-2", "--out", str(tmp_path / "o")) == 0
    run_dir = (tmp_path / "o" / "latest").resolve()
    recs = read_records(run_dir)
    assert sorted({r["seed"] for r in recs if r["kind"] == "accuracy"}) == [0, 1, 2]
    # as if the worker died during seed 2: its records absent, the part not marked done
    write_records_atomic(run_dir, [r for r in recs if not (r["kind"] == "accuracy" and r["seed"] == 2)])
    cases = run_dir / "cases.jsonl"
    cases.write_text("".join(ln for ln in cases.read_text().splitlines(True) if '"part": "accuracy"' not in ln))
    before = [r for r in read_records(run_dir) if r["kind"] == "accuracy"]
    assert brun.main(["--resume", str(run_dir), "--no-report", "--threads", "1"]) == 0
    after = [r for r in read_records(run_dir) if r["kind"] == "accuracy"]
    assert after[: len(before)] == before  # seeds 0 and 1 kept as they were
    assert [r["seed"] for r in after[len(before) :]] == [2]  # only seed 2 trained again


@pytest.mark.parametrize(
    "args, message",
    [
        (["--models", "no-such-model"], "unknown preset 'no-such-model'"),
        (["--impls", "numpy,nope"], "unknown implementation(s) nope"),
        (["--dtype", "float16"], "unknown dtype(s) float16"),
        (["--profile", "nope"], "unknown profile 'nope'"),
        (["--resume", "/nonexistent/run"], "not a run directory"),
        (["--seeds", "0-x"], "--seeds: '0-x' is not a seed or a range like 0-9"),
        (["--seeds", "5-2"], "--seeds: '5-2' is not a range of seeds >= 0, low to high"),
    ],
)
def test_bad_input_clear_message_nonzero_exit(tmp_path, capsys, args, message):
    assert run_main(*args, "--out", str(tmp_path)) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing created


def test_invalid_spec_file(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\ninput_shape = [1, 8, 8]\nloss = "mse"\nlayers = [{ type = "dense", units = 3 }]\n')
    assert run_main("--models", str(bad), "--out", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "train" in err


def test_profiles_are_data_and_overrides_merge():
    for name in ("quick", "standard", "full"):
        prof = brun.load_profile(name)
        assert prof["speed"]["batch_sizes"] and prof["accuracy"] and prof["timeout_s"] > 0
    quick = brun.load_profile("quick")
    assert quick["speed"]["batch_sizes"] == [50]
    pp_cnn = brun.effective_profile(quick, "pure_python", "cnn")
    assert pp_cnn["speed"]["batch_sizes"] == [1] and pp_cnn["parts"] == ["agreement", "speed"]
    assert pp_cnn["speed"]["phases"] == quick["speed"]["phases"]  # untouched keys kept
    assert brun.effective_profile(quick, "pure_python", "mlp")["accuracy"]["max_steps"] == 1
    np_cnn = brun.effective_profile(quick, "numpy", "cnn")
    assert np_cnn["speed"]["batch_sizes"] == [50] and np_cnn["accuracy"]["train_samples"] == 1000
    assert brun.effective_profile(quick, "numpy", "mlp")["accuracy"]["train_samples"] == 5000
    std = brun.load_profile("standard")
    assert std["speed"]["batch_sizes"] == [1, 50, 256]
    full = brun.load_profile("full")
    assert set(full["models"]) == {"mlp", "cnn", "dnn", "mlp-relu"} and full["accuracy"]["epochs"] == 0  # own recipe
    assert len(brun.effective_profile(full, "numpy", "dnn")["seeds"]) >= 3


def test_failure_classification():
    def res(rc, timed_out=False, tail=""):
        return WorkerResult(rc, timed_out, "speed forward b=50", tail)

    assert failure(res(None, True), 5)[0] == "timeout"
    assert failure(res(-9), 5)[0] == "oom"
    assert failure(res(-11), 5)[0] == "crash" and "SIGSEGV" in failure(res(-11), 5)[1]
    assert failure(res(1, tail="MemoryError: x"), 5)[0] == "oom"
    assert failure(res(1, tail="ValueError: x"), 5)[0] == "crash"


def test_fill_derived():
    def speed(impl, median, batch=50):
        return make_record("speed", impl=impl, model="mlp", dtype="float32", phase="forward", batch_size=batch,
                           median_s=median, gflops=1.0 / median)  # fmt: skip

    recs = [speed("numpy", 0.01), speed("pure_python", 1.0), speed("torch", 0.005), speed("pure_python", 0.04, 1)]
    recs.append(make_record("peak", impl="numpy", gflops=400.0))
    out = {(r["impl"], r["batch_size"]): r for r in fill_derived(recs) if r["kind"] == "speed"}
    assert out[("torch", 50)]["speedup_vs_numpy"] == pytest.approx(2.0)
    # against pure Python at batch 1 (25 samples/s), even where it also measured batch 50 (50/s)
    assert out[("torch", 50)]["x_vs_pure_python_b1"] == pytest.approx(10000 / 25)
    assert out[("pure_python", 50)]["x_vs_pure_python_b1"] == pytest.approx(2.0)
    assert out[("pure_python", 50)]["speedup_vs_numpy"] == pytest.approx(0.01)
    assert out[("torch", 50)]["frac_peak"] == pytest.approx(200.0 / 400.0)


def test_timing_plan_and_json():
    from bench.measure.timing import Timer, TimingConfig

    cfg = TimingConfig(warmup_rounds=1, min_rounds=3, max_rounds=50, round_min_s=0.001, target_s=0.05)
    assert cfg.plan(5.0) == (1, 3)  # a slow call: one iteration, min rounds, no calibration runs
    it, rounds = cfg.plan(1e-5)
    assert it == 100 and 3 <= rounds <= 50
    calls = []
    m = Timer(cfg).measure("noop", lambda: calls.append(1))
    assert m.rounds == len(m.samples_s) and m.iqr_s >= 0 and m.median_s < 1e-3
    # warm-up + probes (3: a no-op never fills round_min_s) + timed rounds
    # (+ pytest-benchmark's one untimed call for the result when looping)
    assert m.warmup_calls == cfg.warmup_rounds
    assert len(calls) == cfg.warmup_rounds + cfg.probe_calls + m.rounds * m.iterations + (m.iterations > 1)


def test_calibration_follows_the_warm_up():
    """A first call that retraces (100x slower) must not size the rounds: the case still gets
    many rounds. Negative control: calibrating from that first call gives only min_rounds."""
    import time

    from bench.measure.timing import Timer, TimingConfig

    cfg = TimingConfig(warmup_rounds=1, min_rounds=3, max_rounds=40, round_min_s=0.002, target_s=0.1)
    state = {"n": 0}

    def fn():
        state["n"] += 1
        time.sleep(0.2 if state["n"] == 1 else 0.002)

    m = Timer(cfg).measure("retrace", fn)
    assert m.rounds >= 8 and m.probe_s < 0.1 and max(m.samples_s) < 0.1  # loose: a loaded machine oversleeps
    assert cfg.plan(0.2)[1] == cfg.min_rounds  # what the first call alone would have planned


def test_fit_input():
    import numpy as np

    from bench.check.accuracy import fit_input

    x = np.random.default_rng(0).random((3, 1, 28, 28)).astype("float32")
    y = fit_input(x, (1, 8, 8))
    assert y.shape == (3, 1, 8, 8) and y.dtype == np.float32
    assert y[0, 0, 0, 0] == pytest.approx(x[0, 0, 2:5, 2:5].mean())
    assert fit_input(x, (1, 28, 28)) is x
    with pytest.raises(NotImplementedError):
        fit_input(x, (3, 8, 8))


def test_gate_confirms_speed_failures_in_fresh_processes(monkeypatch, tmp_path, capsys):
    """A speed-only failure is re-measured (impls + numpy, failing models) and the gate
    follows the confirmation; a failure that is not speed-only is final."""
    import argparse

    from bench import gate as gate_run
    from bench.judge import baseline, compare

    calls = []
    base = Path("BASE")
    monkeypatch.setattr(compare, "select_baseline", lambda b, c: baseline.Selection(base, base, None, None, ("BASE",)))
    ns = argparse.Namespace(gate="BASE", profile="quick", threads=2, data_dir=None, timeout=None, no_report=True)
    rd = tmp_path / "20990101-000000-quick"
    rd.mkdir()

    def run_again(argv):  # stands in for the run command
        calls.append(argv)
        return 0

    verdicts = iter([1, 0])
    monkeypatch.setattr(compare, "main", lambda argv: calls.append(argv) or next(verdicts))
    monkeypatch.setattr(compare, "speed_only_failures", lambda b, c: {"torch": {"mlp"}})
    assert gate_run.gate(ns, rd, run_again) == 0  # not reproduced
    gate = json.loads((rd / "gate.json").read_text())
    assert gate["verdict"] == "PASS" and gate["confirmation"] and gate["baseline"] == "BASE"
    out = capsys.readouterr().out
    assert out.count("RESULT:") == 1 and "RESULT: PASS" in out  # one final verdict, after the confirmation
    assert "--label" in calls[0] and "first measurement" in calls[0][calls[0].index("--label") + 1]
    rerun = calls[1]
    assert rerun[rerun.index("--impls") + 1] == "numpy,torch" and rerun[rerun.index("--models") + 1] == "mlp"
    verdicts = iter([1, 1])
    assert gate_run.gate(ns, rd, run_again) == 1  # reproduced
    confirm = calls[-1]
    assert confirm[confirm.index("--first-measurement") + 1] == str(rd)  # a suspect reproduces against it
    calls.clear()
    verdicts = iter([0, 1])  # the first measurement passed with a suspect row: re-measured all the same
    assert gate_run.gate(ns, rd, run_again) == 1 and len(calls) == 3
    monkeypatch.setattr(compare, "speed_only_failures", lambda b, c: None)
    verdicts = iter([1])
    assert gate_run.gate(ns, rd, run_again) == 1  # agreement/accuracy failures are not re-measured
    assert json.loads((rd / "gate.json").read_text()) == {
        "verdict": "FAIL",
        "baseline": "BASE",
        "confirmation": False,
        "confirm_dir": None,
        "machine_kind": None,
        "baseline_kind": None,
        "speed_not_gated": None,
        "ab": None,
        "speed_rows": [],
    }


def test_a_case_that_raises_in_train_step_exits_3_and_the_reports_are_written(tmp_path, fakes, capsys):
    """The run finishes the other cases, writes its reports, lists the failed case last and exits
    with its own code (3: not a bad input, not a gate failure); numpy alone is the positive control."""
    prof = write_profile(tmp_path, '["speed"]')
    out = tmp_path / "out"
    rc = brun.main(["--profile", str(prof), "--impls", "numpy,fake_step_raises", "--out", str(out), "--threads", "1"])
    assert rc == EXIT_CASES_FAILED == 3
    run_dir = (out / "latest").resolve()
    assert (run_dir / "report.html").is_file() and (run_dir / "summary.md").is_file()
    recs = read_records(run_dir)
    assert {r["phase"] for r in recs if r["kind"] == "speed" and r["impl"] == "numpy"} >= {"train_step"}
    tail = capsys.readouterr().out.rstrip().splitlines()
    at = max(i for i, line in enumerate(tail) if line.startswith("FAILED CASES (1)"))
    assert "fake_step_raises tiny-mlp float32" in tail[at + 1] and "the fused kernel is broken" in tail[at + 1]
    assert all(not line.startswith("  ") or "fake_step_raises" in line for line in tail[at + 1 :])
    assert brun.main(["--profile", str(prof), "--impls", "numpy", "--out", str(out), "--threads", "1",
                      "--no-report"]) == 0  # fmt: skip


@pytest.mark.parametrize(
    ("layers", "shape", "words"),
    [
        ('{ type = "dense", units = 7 }', [1, 28, 28], "layer 3 (dense): units = 7, but MNIST has 10 classes"),
        ('{ type = "dense", units = 10 }', [3, 32, 32], "input_shape = [3, 32, 32]: MNIST images are [1, 28, 28]"),
    ],
    ids=["7-unit-output", "rgb-32x32-input"],
)
def test_spec_that_cannot_run_on_mnist_exits_2_before_a_run_folder(tmp_path, capsys, layers, shape, words):
    spec = tmp_path / "odd.toml"
    spec.write_text(
        f'name = "odd"\ninput_shape = {shape}\nloss = "mse"\nlayers = [{{ type = "flatten" }}, '
        f'{{ type = "dense", units = 16 }}, {{ type = "sigmoid" }}, {layers}, {{ type = "softmax" }}]\n'
        "train = { lr = 0.1, batch_size = 8, epochs = 1 }\n"
    )
    out = tmp_path / "out"
    assert run_main("--models", str(spec), "--impls", "numpy", "--out", str(out)) == 2
    assert words in capsys.readouterr().err and not out.exists()
    # positive control: the same spec with 10 units on a (1, 28, 28) input is accepted
    spec.write_text(spec.read_text().replace("units = 7", "units = 10").replace("[3, 32, 32]", "[1, 28, 28]"))
    from bench.plan.inputs import fits_mnist
    from bench.plan.presets import resolve

    assert fits_mnist(resolve(str(spec))) is None and fits_mnist(resolve("tiny-mlp")) is None
