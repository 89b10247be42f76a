"""Backends as plugins: a package outside this repository, installed into a temporary folder as
a ``*.dist-info`` with ``entry_points.txt`` (group ``nnbench.implementations``), is listed by
``python -m bench specs``, passes ``python -m bench agree`` and is picked up by the conformance
suite. Negative controls: a plugin whose import raises and one whose ``available()`` raises are
listed unavailable with the exception text (never a crash), and two distributions claiming one
name are a clear error naming both.

The plugin is the example of docs/backends.md (``docs/example-plugin/nnbench_dense.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.plan import backends

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "docs" / "example-plugin" / "nnbench_dense.py"
BROKEN_IMPORT = "raise RuntimeError('this plugin cannot be imported')\n"
BROKEN_AVAILABLE = (
    "REQUIRES = ()\n\n\ndef available():\n    raise OSError('the device query failed')\n\n\n"
    "def build(spec, params, dtype='float32', seed=0):\n    raise NotImplementedError('never built')\n"
)


def install(site: Path, dist: str, entries: dict[str, str], modules: dict[str, str]) -> None:
    """What ``pip install`` leaves: the modules, and a dist-info naming the entry points."""
    info = site / f"{dist.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
    lines = "".join(f"{k} = {v}\n" for k, v in entries.items())
    (info / "entry_points.txt").write_text(f"[nnbench.implementations]\n{lines}")
    for name, text in modules.items():
        (site / f"{name}.py").write_text(text)


def bench(site: Path, *args: str, module: str = "bench", timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", module, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    install(site, "nnbench-dense", {"nnbench_dense": "nnbench_dense"}, {"nnbench_dense": EXAMPLE.read_text()})
    install(site, "nnbench-broken", {"broken_import": "broken_import"}, {"broken_import": BROKEN_IMPORT})
    install(site, "nnbench-flaky", {"broken_available": "broken_available"}, {"broken_available": BROKEN_AVAILABLE})
    return site


def line_of(out: str, name: str) -> str:
    return next((ln for ln in out.splitlines() if ln.split(" ")[0] == name), "")


def test_specs_lists_the_plugin_and_the_broken_ones_with_why(site):
    r = bench(site, "specs")
    assert r.returncode == 0, r.stderr
    assert "available: numpy" in line_of(r.stdout, "nnbench_dense")
    assert line_of(r.stdout, "numpy").startswith("numpy") and "available: numpy" in line_of(r.stdout, "numpy")
    assert "unavailable" in line_of(r.stdout, "broken_import")
    assert "RuntimeError: this plugin cannot be imported" in line_of(r.stdout, "broken_import")
    assert "OSError: the device query failed" in line_of(r.stdout, "broken_available")
    # positive control: without the folder on the path none of them is listed
    r0 = bench(site.parent / "empty", "specs")
    assert r0.returncode == 0 and not line_of(r0.stdout, "nnbench_dense") and line_of(r0.stdout, "numpy")


def test_plugin_passes_agree_and_broken_ones_are_skipped_with_why(site):
    r = bench(site, "agree", "--impl", "nnbench_dense,broken_import", "--model", "tiny-mlp,mlp-relu")
    assert r.returncode == 0, r.stdout + r.stderr
    for model in ("tiny-mlp", "mlp-relu"):
        for dtype in ("float64", "float32"):
            assert f"nnbench_dense {model} {dtype}: PASS" in r.stdout, r.stdout
    assert "broken_import: skipped: availability check failed: RuntimeError" in r.stdout


def test_conformance_suite_picks_the_plugin_up(site):
    r = bench(site, "tests/cpu/test_conformance.py", "-q", "-p", "no:cacheprovider", "-k", "nnbench_dense or broken",
              "-rs", module="pytest")  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    summary = r.stdout.strip().splitlines()[-1]
    assert " passed" in summary and int(summary.split(" passed")[0].split()[-1]) >= 10, summary
    assert "nnbench_dense does not support this spec: nnbench_dense: layer" in r.stdout  # cnn: a skip with why
    assert "broken_import unavailable here: availability check failed: RuntimeError" in r.stdout


def test_a_plugin_that_disagrees_fails_conformance(site):
    """Negative control: the same plugin with its ``tanh`` derivative wrong fails the suite."""
    wrong = EXAMPLE.read_text().replace("lambda a: 1 - a * a", "lambda a: 1 - a")
    assert wrong != EXAMPLE.read_text()
    (site / "nnbench_dense.py").write_text(wrong)
    r = bench(site, "agree", "--impl", "nnbench_dense", "--model", "tiny-mlp", "--dtype", "float64")
    assert r.returncode != 0 and "nnbench_dense tiny-mlp float64: FAIL" in r.stdout, r.stdout


def test_two_distributions_claiming_one_name_is_an_error_naming_both(site):
    install(site, "nnbench-impostor", {"numpy": "nnbench_dense"}, {})
    r = bench(site, "specs")
    assert r.returncode == 2
    assert "'numpy' is claimed twice" in r.stderr and "nnbench-impostor 0.1.0" in r.stderr
    assert "nnbench" in r.stderr.split("claimed twice: by ")[1].split(" (")[0]


def test_same_module_under_one_name_twice_is_one_entry(site):
    install(site, "nnbench-dense-copy", {"nnbench_dense": "nnbench_dense"}, {})
    r = bench(site, "specs")
    listed = [ln.split()[0] for ln in r.stdout.splitlines() if ln.strip()]
    assert r.returncode == 0 and listed.count("nnbench_dense") == 1


def test_register_and_the_source_tree_fallback(monkeypatch):
    """The built-ins come from pyproject.toml's own entry points in report order, and a
    run-time registration (a worker given its run's registry) is seen by names/get."""
    src = [e.name for e in backends._source_tree()]
    assert src[:3] == ["pure_python", "numpy", "numba"] and "jax" in src
    monkeypatch.setitem(backends._extra, "twin", "implementations.numpy")
    assert "twin" in backends.names() and backends.get("twin") is backends.get("numpy")


def test_example_plugin_is_what_the_docs_show():
    doc = (REPO / "docs" / "backends.md").read_text(encoding="utf-8")
    assert "docs/example-plugin/nnbench_dense.py" in doc and 'nnbench_dense = "nnbench_dense"' in doc
    assert EXAMPLE.read_text(encoding="utf-8").rstrip() in doc  # the page shows the tested file, whole
    pyproject = (EXAMPLE.parent / "pyproject.toml").read_text(encoding="utf-8")
    assert '[project.entry-points."nnbench.implementations"]\nnnbench_dense = "nnbench_dense"' in pyproject
