"""The prepared GPU run, checked where no GPU is: the ``gpu`` profile refuses to run without its
GPU backends (exit 2, each with its reason, no run folder), ``jax`` stays on the CPU where JAX
could see a GPU and ``jax-gpu`` says why it cannot run, and a run works with what a stock GPU
image lacks blocked at import (TensorFlow, Keras, pooch): MNIST read from a folder, the keras
backend listed unavailable with why."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bench.plan import backends
from bench.plan.profile import load_profile

REPO = Path(__file__).resolve().parents[2]
BLOCKED = ("tensorflow", "keras", "pooch")
SITECUSTOMIZE = f"""
import sys


class _NotOnTheGpuImage:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ImportError(f"{{name}} is blocked: not on the GPU image")
        return None


sys.meta_path.insert(0, _NotOnTheGpuImage())
"""
TINY = """
name = "tinygpuimage"
models = ["mlp-relu"]
dtypes = ["float32"]
seeds = [0]
threads = 1
timeout_s = 240
parts = ["agreement", "speed", "accuracy"]
[agreement]
batch = 4
steps = 1
[speed]
processes = 1
phases = ["train_step"]
batch_sizes = [50]
warmup_rounds = 1
min_rounds = 3
max_rounds = 5
round_min_s = 0.0
target_s = 0.02
data_seed = 1
[peak]
gemm_n = 64
rounds = 2
[accuracy]
epochs = 1
train_samples = 500
test_samples = 200
eval_batch = 100
"""


def bench(*args: str, env: dict | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "bench", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env or dict(os.environ), cwd=cwd, timeout=600)


def test_gpu_profile_is_data_and_asks_for_the_gpu_backends():
    prof = load_profile("gpu")
    assert prof["require"] == ["cupy", "torch-cuda", "jax-gpu"] and set(prof["require"]) <= set(prof["impls"])
    assert prof["speed"]["batch_sizes"] == [50, 256, 4096] and "accuracy" not in prof["parts"]
    assert set(prof["impls"]) <= set(backends.names())


def test_gpu_profile_without_its_gpu_backends_exits_2_naming_each(tmp_path):
    avail = backends.available()
    if all(avail[i][0] for i in ("cupy", "torch-cuda", "jax-gpu")):
        pytest.skip("this machine has every GPU backend: the refusal cannot be shown here")
    r = bench("run", "--profile", "gpu", "--out", str(tmp_path / "out"))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "profile 'gpu' requires backends that cannot run here" in r.stderr
    for impl in ("cupy", "torch-cuda", "jax-gpu"):
        if not avail[impl][0]:
            assert f"{impl}: {avail[impl][1].splitlines()[0]}" in r.stderr
    assert not (tmp_path / "out").exists()


def test_jax_stays_on_the_cpu_and_jax_gpu_says_why_not():
    pytest.importorskip("jax")
    from bench.core.params import init_params
    from bench.plan.presets import preset
    from implementations.jax.model import cpu_device

    spec = preset("tiny-mlp")
    m = backends.get("jax").build(spec, init_params(spec, 0), "float32")
    assert {d.platform for a in m.w.values() for d in a.devices()} == {"cpu"} and m.device == cpu_device()
    ok, reason = backends.get("jax-gpu").available()
    if not ok:
        assert reason.startswith("no GPU for JAX: ") and len(reason) > len("no GPU for JAX: ")
        with pytest.raises(NotImplementedError, match="jax-gpu: no GPU for JAX"):
            backends.get("jax-gpu").build(spec, init_params(spec, 0), "float32")


def test_a_run_without_tensorflow_keras_or_pooch(tmp_path):
    """What the GPU image lacks is blocked in the harness and every worker (a sitecustomize on
    PYTHONPATH): the run still agrees, times and trains numpy on MNIST read from MNIST_DIR."""
    mnist = os.environ.get("MNIST_DIR")
    if not mnist:
        pytest.skip("MNIST_DIR is not set: this test reads MNIST from a folder, as the GPU run does")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(SITECUSTOMIZE))
    (tmp_path / "tiny.toml").write_text(TINY)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    probe = subprocess.run([sys.executable, "-c", "import pooch"], env=env, capture_output=True, text=True)
    assert probe.returncode != 0 and "blocked" in probe.stderr  # positive control: the block works
    out = tmp_path / "out"
    r = bench("run", "--profile", str(tmp_path / "tiny.toml"), "--impls", "numpy,keras", "--data-dir", mnist,
              "--out", str(out), "--no-report", env=env)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert any(line.split() and line.split()[0] == "keras" and "skipped" in line for line in r.stdout.splitlines())
    recs = [json.loads(line) for line in next(out.glob("*/results.jsonl")).read_text().splitlines()]
    assert any(r["kind"] == "accuracy" and r["impl"] == "numpy" for r in recs)
    assert any(r["kind"] == "speed" and r["impl"] == "numpy" for r in recs)
    keras = [r for r in recs if r["kind"] == "error" and r["impl"] == "keras" and r["phase"] == "availability"]
    assert keras and "blocked: not on the GPU image" in keras[0]["error"]


def test_gpu_profile_dry_run_without_what_the_gpu_image_lacks(tmp_path):
    """``run --profile gpu --dry-run`` here, TensorFlow, Keras and pooch blocked at import in every
    process: the GPU backends are skipped with their reasons, NumPy goes through agreement and
    every speed case once, and the run folder and its report are written."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(textwrap.dedent(SITECUSTOMIZE))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    env.pop("MNIST_DIR", None)  # the gpu profile needs no MNIST
    out = tmp_path / "out"
    r = bench("run", "--profile", "gpu", "--dry-run", "--out", str(out), env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "GPU: " in r.stdout
    run_dir = next(p for p in out.iterdir() if p.is_dir() and not p.is_symlink())
    assert (run_dir / "report.html").is_file() and (run_dir / "summary.md").is_file()
    recs = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    speed = {(r["model"], r["phase"], r["batch_size"]) for r in recs if r["kind"] == "speed" and r["impl"] == "numpy"}
    assert speed == {(m, p, b) for m in ("mlp", "cnn") for p in ("forward", "train_step") for b in (50, 256, 4096)}
    skipped = {r["impl"]: r["error"] for r in recs if r["kind"] == "error" and r["phase"] == "availability"}
    avail = backends.available()
    for impl in ("cupy", "torch-cuda", "jax-gpu"):
        if not avail[impl][0]:
            assert impl in skipped and skipped[impl], skipped
