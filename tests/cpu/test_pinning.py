"""Pinned workers (profile ``threads`` and ``pin``; ``bench.core.threads``) and the malloc settings
every worker runs with."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

from bench.core import threads
from bench.measure.results import RUN_FILE

LAST = sorted(os.sched_getaffinity(0))[-1]


def test_pin_cpus_takes_the_last_usable_ones():
    assert threads.pin_cpus(1) == [LAST]
    with pytest.raises(ValueError, match="cannot pin"):
        threads.pin_cpus(len(os.sched_getaffinity(0)) + 1)


def test_a_worker_pins_itself_from_the_environment():
    """A child process reads NNBENCH_CPUS before anything else; negative control: without it
    the child keeps every CPU it inherited."""
    code = (
        "from bench.core.threads import pin_from_env; import os; pin_from_env(); print(sorted(os.sched_getaffinity(0)))"
    )
    env = dict(os.environ, NNBENCH_CPUS=str(LAST))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [LAST]
    env.pop("NNBENCH_CPUS")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == sorted(os.sched_getaffinity(0))


def test_apply_pinning_sets_and_clears(monkeypatch):
    monkeypatch.delenv(threads.NNBENCH_CPUS, raising=False)
    threads.apply_pinning([LAST])
    assert os.environ[threads.NNBENCH_CPUS] == str(LAST)
    threads.apply_pinning(None)
    assert threads.NNBENCH_CPUS not in os.environ


def _ns(tmp_path, **kw):
    base = dict(models="tiny-mlp", impls="numpy", dtype=None, profile="quick", out=str(tmp_path), resume=None,
                threads=None, data_dir=None, timeout=None, no_report=True, gate=None, no_pin=False)  # fmt: skip
    return argparse.Namespace(**(base | kw))


def test_quick_runs_one_pinned_thread_whatever_nnbench_threads_says(tmp_path, monkeypatch):
    """The profile's ``threads`` wins over NNBENCH_THREADS (tox sets 2); ``--threads`` and
    ``--no-pin`` win over the profile."""
    from bench import run

    monkeypatch.setattr(threads, "apply_threads", lambda n=None: n or 1)  # keep this process's threads
    monkeypatch.setenv("NNBENCH_THREADS", "2")
    meta = json.loads((run.create_run(_ns(tmp_path / "a")) / RUN_FILE).read_text())
    assert meta["threads"] == 1 and meta["cpus"] == [LAST]
    meta = json.loads((run.create_run(_ns(tmp_path / "b", no_pin=True)) / RUN_FILE).read_text())
    assert meta["cpus"] is None
    meta = json.loads((run.create_run(_ns(tmp_path / "c", profile="standard")) / RUN_FILE).read_text())
    assert meta["threads"] == 1 and meta["cpus"] == [LAST]  # the committed report's profile pins too
    meta = json.loads((run.create_run(_ns(tmp_path / "d", profile="full")) / RUN_FILE).read_text())
    assert meta["cpus"] is None and meta["threads"] == 2  # negative control: full is not pinned
    assert "MALLOC_MMAP_THRESHOLD_=" in meta["env"]["malloc"]
    assert meta["env"]["blas_wait"].startswith("OPENBLAS_THREAD_TIMEOUT=")


def test_workers_get_the_malloc_settings_unless_the_caller_set_them(tmp_path, monkeypatch):
    from bench.measure import spawn

    seen = {}

    class Stop(Exception):
        pass

    def fake_popen(*a, env=None, **k):
        seen.update(env)
        raise Stop

    monkeypatch.setattr(spawn.subprocess, "Popen", fake_popen)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1")
    with pytest.raises(Stop):
        spawn.run_worker(["case"], tmp_path, "x", 1.0, "x", None)
    assert seen["MALLOC_MMAP_THRESHOLD_"] == threads.MALLOC_ENV["MALLOC_MMAP_THRESHOLD_"]
    assert seen["MALLOC_TRIM_THRESHOLD_"] == "1"  # the caller's own value wins
    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT", raising=False)
    with pytest.raises(Stop):
        spawn.run_worker(["case"], tmp_path, "x", 1.0, "x", None)
    assert seen["OPENBLAS_THREAD_TIMEOUT"] == threads.BLAS_WAIT_ENV["OPENBLAS_THREAD_TIMEOUT"] == "4"
    monkeypatch.setenv("OPENBLAS_THREAD_TIMEOUT", "28")
    with pytest.raises(Stop):
        spawn.run_worker(["case"], tmp_path, "x", 1.0, "x", None)
    assert seen["OPENBLAS_THREAD_TIMEOUT"] == "28"  # negative control: the caller's value is kept


def test_blas_wait_here_says_when_it_comes_too_late(monkeypatch):
    monkeypatch.delenv("OPENBLAS_THREAD_TIMEOUT", raising=False)
    import numpy  # noqa: F401  # loaded, as in any test process

    assert "too late" in threads.apply_blas_wait_here()
    assert os.environ["OPENBLAS_THREAD_TIMEOUT"] == "4"
