"""The same-machine A/B gate (``python -m bench run --gate-ref REF``, ``bench.measure.ref_tree``).

Bad input is refused with exit 2 before anything is measured (no run folder, no worktree left),
each case in a real git repository made in a tmp dir from a copy of this project: not a git
repository, a REF git cannot resolve, a REF with none of the run's implementations, a REF whose
backend lacks a function of the contract or does not import against this harness. Then a real
small A/B run of a dirty tree (the run records the tree and REF, a backend only the working tree
has is reported new, the worktree is gone afterwards), one interrupted by SIGTERM (the worktree
is removed all the same), and the gate's twin-by-twin speed rule on synthetic A/B runs,
with its negative control: a slowed side A fails, NumPy included.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.judge import baseline, compare
from bench.measure import ref_tree
from bench.measure.results import RUN_FILE, append_records
from bench.plan.sides import base_name, is_ref, ref_name, same_side

ROOT = Path(__file__).resolve().parents[2]
TINY_PROFILE = """
name = "tinyab"
models = ["tiny-mlp"]
dtypes = ["float32"]
seeds = [0]
threads = 1
timeout_s = 120
parts = ["speed"]
[speed]
processes = 2
phases = ["train_step"]
batch_sizes = [8]
warmup_rounds = 1
min_rounds = 5
max_rounds = 10
round_min_s = 0.001
target_s = 0.05
data_seed = 1
[accuracy]
epochs = 1
[peak]
gemm_n = 64
rounds = 2
"""


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}  # fmt: skip
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True).stdout


def copy_project(dst: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "baselines")
    for name in ("bench", "implementations"):
        shutil.copytree(ROOT / name, dst / name, ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")
    (dst / "tinyab.toml").write_text(TINY_PROFILE, encoding="utf-8")
    (dst / ".gitignore").write_text("runs/\n__pycache__/\n", encoding="utf-8")
    return dst


@pytest.fixture
def project(tmp_path):
    """A copy of this project, not yet a git repository."""
    return copy_project(tmp_path / "proj")


@pytest.fixture
def repo(project):
    """The copy as a git repository with one commit."""
    git(project, "init", "-q")
    git(project, "add", "-A")
    git(project, "commit", "-qm", "first")
    return project


def bench_run(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNBENCH_REF")}
    env["NNBENCH_REQUIRE"] = ""
    cmd = [sys.executable, "-m", "bench", "run", "--profile", "tinyab.toml", "--out", "runs", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def worktrees(repo: Path) -> int:
    return sum(line.startswith("worktree ") for line in git(repo, "worktree", "list", "--porcelain").splitlines())


def refused(res: subprocess.CompletedProcess[str], cwd: Path, *words: str) -> None:
    assert res.returncode == 2, res.stdout + res.stderr
    for w in words:
        assert w in res.stderr, res.stderr
    assert not (cwd / "runs").exists()  # nothing measured, no run folder


def went_ahead(res: subprocess.CompletedProcess[str], cwd: Path) -> dict:
    """The run was accepted, measured both sides and gated them: exit 0, or 1 only where a speed
    row failed again in its confirmation (this tiny A/A case takes 60-150 us a step, and its
    processes differ up to 2x on a shared 2-core machine: the statistics are the synthetic tests'
    business, the plumbing is this one's). Never "compared nothing", never refused. gate.json."""
    assert res.returncode in (0, 1), res.stdout + res.stderr
    assert "RESULT: " in res.stdout and "compared nothing" not in res.stdout, res.stdout
    gate = json.loads((cwd / "runs" / "latest" / "gate.json").read_text())
    if res.returncode == 1:  # only a speed failure that its confirmation run reproduced
        assert gate["confirmation"] and "confirmation run: regression reproduced" in res.stdout, res.stdout
    return gate


# ------------------------------------------------------------------ bad input: exit 2
def test_not_a_git_repository(project):
    refused(bench_run(project, "--impls", "numpy", "--gate-ref", "HEAD"), project, "not a git repository")


def test_ref_git_cannot_resolve(repo):
    refused(
        bench_run(repo, "--impls", "numpy", "--gate-ref", "no-such-branch"), repo, "no-such-branch", "cannot resolve"
    )
    assert worktrees(repo) == 1


def test_positive_control_a_good_ref_is_accepted(repo):
    """The same repository and REF as the refusals, with nothing wrong: the run goes ahead."""
    res = bench_run(repo, "--impls", "numpy", "--gate-ref", "HEAD")
    assert went_ahead(res, repo)["ab"]["rev"] == "HEAD"


def test_ref_without_the_asked_implementations(repo):
    pyproject = repo / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    start = text.index('[project.entry-points."nnbench.implementations"]\n')
    end = text.index("\n[", start + 1)
    only = '[project.entry-points."nnbench.implementations"]\npure_python = "implementations.pure_python"\n'
    pyproject.write_text(text[:start] + only + text[end:], encoding="utf-8")
    git(repo, "commit", "-qam", "only pure python")
    git(repo, "checkout", "-q", "HEAD~1", "--", "pyproject.toml")  # the working tree has numpy
    res = bench_run(repo, "--impls", "numpy,torch", "--gate-ref", "HEAD")
    refused(res, repo, "has no implementation the run asked for", "numpy, torch", "it has: pure_python")
    assert worktrees(repo) == 1


def test_ref_with_an_incompatible_contract(repo):
    backend = repo / "implementations" / "numpy" / "__init__.py"
    good = backend.read_text(encoding="utf-8")
    backend.write_text(good.replace("def build(", "def make_model("), encoding="utf-8")
    git(repo, "commit", "-qam", "numpy: build renamed")
    ref = git(repo, "rev-parse", "HEAD").strip()
    backend.write_text(good, encoding="utf-8")
    refused(bench_run(repo, "--impls", "numpy", "--gate-ref", ref), repo, ref[:10], "numpy", "no function build")
    assert worktrees(repo) == 1


def test_ref_that_does_not_import_against_this_harness(repo):
    backend = repo / "implementations" / "numpy" / "__init__.py"
    good = backend.read_text(encoding="utf-8")
    backend.write_text(good + "\nfrom bench.no_such_module import helper  # noqa\n", encoding="utf-8")
    git(repo, "commit", "-qam", "numpy imports a harness module that is gone")
    backend.write_text(good, encoding="utf-8")
    res = bench_run(repo, "--impls", "numpy", "--gate-ref", "HEAD")
    refused(res, repo, "cannot be imported here", "bench.no_such_module")


def test_gate_and_gate_ref_together(repo):
    refused(bench_run(repo, "--gate", "runs", "--gate-ref", "HEAD"), repo, "not both")


# ------------------------------------------------------------------ a real A/B run
def test_ab_run_of_a_dirty_tree(repo):
    """Dirty working tree (an uncommitted backend only it has): recorded, reported new, not gated;
    numpy measured on both sides, interleaved; the worktree is removed afterwards."""
    pyproject = repo / "pyproject.toml"
    twin = 'numpy = "implementations.numpy"\nnumpy-twin = "implementations.numpy"'
    text = pyproject.read_text(encoding="utf-8")
    assert 'numpy = "implementations.numpy"' in text
    pyproject.write_text(text.replace('numpy = "implementations.numpy"', twin, 1), encoding="utf-8")
    res = bench_run(repo, "--impls", "numpy,numpy-twin", "--gate-ref", "HEAD")
    went_ahead(res, repo)
    assert "A/B" in res.stdout
    run_dir = (repo / "runs" / "latest").resolve()
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["tree"]["dirty"] and len(meta["tree"]["diff_sha256"]) == 64
    assert meta["gate_ref"]["commit"] == git(repo, "rev-parse", "HEAD").strip()
    assert meta["gate_ref"]["new"] == ["numpy-twin"] and meta["impls"] == ["numpy", "numpy@ref", "numpy-twin"]
    recs = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    speed = [(r["impl"], r["process"]) for r in recs if r["kind"] == "speed"]
    assert ("numpy@ref", 0) in speed and ("numpy@ref", 1) in speed and ("numpy", 1) in speed
    assert "new in the working tree (none in REF: not gated)" in res.stdout
    summary = (run_dir / "summary.md").read_text()
    assert "A/B run" in summary and "uncommitted changes" in summary and "B/A" in summary
    gate = json.loads((run_dir / "gate.json").read_text())
    assert gate["ab"]["commit"] == meta["gate_ref"]["commit"]
    assert {r["impl"] for r in gate["speed_rows"]} == {"numpy"}  # numpy-twin: new, not gated
    assert worktrees(repo) == 1


def test_interrupted_ab_run_removes_the_worktree(repo):
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNBENCH_REF")}
    profile = (repo / "tinyab.toml").read_text().replace("target_s = 0.05", "target_s = 30").replace(
        "max_rounds = 10", "max_rounds = 100000")  # fmt: skip
    (repo / "slow.toml").write_text(profile)
    cmd = [sys.executable, "-m", "bench", "run", "--profile", "slow.toml", "--impls", "numpy", "--gate-ref", "HEAD"]
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while worktrees(repo) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert worktrees(repo) == 2  # REF is checked out while the run measures
    held = Path(git(repo, "worktree", "list", "--porcelain").split("worktree ")[2].splitlines()[0])
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == 130
    assert worktrees(repo) == 1 and not held.exists() and not held.parent.exists()


# ------------------------------------------------------------------ helpers, read without running
def test_registry_read_from_git_without_a_checkout(repo):
    sha = git(repo, "rev-parse", "HEAD").strip()
    reg = ref_tree.ref_registry(sha, "HEAD", repo)
    assert reg["numpy"] == "implementations.numpy" and "torch" in reg
    assert ref_tree._entry_points('[project.entry-points."nnbench.implementations"]\nfoo = "pkg.foo"\n') == {
        "foo": "pkg.foo"
    }
    assert ref_tree._entry_points("[project]\nname = 'x'\n") is None
    assert ref_tree._registry_literal("_REGISTRY = {'a': 'm.a'}\n") == {"a": "m.a"}
    assert ref_tree._registry_literal("REGISTRY = {'a': 'm.a'}\n") is None  # negative control


def test_tree_state_hashes_the_changes(repo):
    clean = ref_tree.tree_state(repo)
    assert clean == {"commit": git(repo, "rev-parse", "HEAD").strip(), "dirty": False, "diff_sha256": None}
    (repo / "bench" / "sides.py").write_text("# changed\n", encoding="utf-8")
    one = ref_tree.tree_state(repo)
    (repo / "new_file.py").write_text("x = 1\n", encoding="utf-8")
    two = ref_tree.tree_state(repo)
    assert one["dirty"] and two["dirty"] and one["diff_sha256"] != two["diff_sha256"]


def test_fallback_commit_then_merge_base_then_why(repo, tmp_path):
    """``--gate DIR`` with no baseline of this kind: the nearest baseline's commit; when this clone
    lacks it, the merge base with the default branch; with neither, the reason."""
    git(repo, "branch", "-M", "main")
    head = git(repo, "rev-parse", "HEAD").strip()
    base = tmp_path / "baselines" / "1cpu-other"
    base.mkdir(parents=True)
    env = {"cpu_simd": "other", "cpu_cores_usable": 1, "git_commit": head + "+dirty"}
    (base / RUN_FILE).write_text(json.dumps({"run_id": "b", "env": env}))
    append_records(base, [])
    (base / "results.jsonl").touch()
    p, why = baseline.fallback(str(base.parent), ["numpy"], False, repo)
    assert why is None and p.commit == head and "nearest baseline 1cpu-other" in p.why
    env["git_commit"] = "0" * 40
    (base / RUN_FILE).write_text(json.dumps({"run_id": "b", "env": env}))
    p, why = baseline.fallback(str(base.parent), ["numpy"], False, repo)
    assert p.commit == head and "merge base with main" in p.why and "not in this clone" in p.why
    git(repo, "checkout", "-q", "--orphan", "lonely")
    git(repo, "commit", "-qm", "unrelated history")
    git(repo, "branch", "-D", "main")
    p, why = baseline.fallback(str(base.parent), ["numpy"], False, repo)
    assert p is None and "no commit to A/B against" in why and "no merge base" in why


def test_sides_names():
    assert ref_name("numpy") == "numpy@ref" == ref_name("numpy@ref")
    assert is_ref("torch@ref") and not is_ref("torch") and not is_ref(None)
    assert base_name("torch-compile@ref") == "torch-compile" and base_name("numpy") == "numpy"
    assert same_side("numpy", "torch@ref") == "numpy@ref" and same_side("numpy", "torch") == "numpy"


# ------------------------------------------------------------------ the twin-by-twin speed rule
def ab_run(tmp_path, name: str, slow: dict[str, float] | None = None):
    """A synthetic A/B run: side B (REF) and side A are two synthetic runs of one machine, B's
    implementations renamed ``<impl>@ref``; ``slow`` slows side A."""
    from test_compare import IMPLS, synthetic_records

    meta, base = synthetic_records(name, seed=1)
    _, cur = synthetic_records(name, seed=2, slow=slow)
    for r in base:
        if r.get("impl") and r["kind"] != "peak":
            r["impl"] = ref_name(r["impl"])
    run_dir = tmp_path / name
    run_dir.mkdir()
    meta |= {"gate_ref": {"rev": "HEAD", "commit": "a" * 40, "registry": {}, "new": [], "removed": ["old"]},
             "tree": {"commit": "b" * 40, "dirty": False},
             "impls": [n for i in IMPLS for n in (i, ref_name(i))]}  # fmt: skip
    (run_dir / RUN_FILE).write_text(json.dumps(meta))
    append_records(run_dir, base + [r for r in cur if r["kind"] != "peak"])
    return run_dir


@pytest.fixture
def no_required(monkeypatch):
    monkeypatch.delenv("NNBENCH_REQUIRE", raising=False)


def test_ab_gate_passes_a_a_and_fails_a_slowed_side(tmp_path, capsys, no_required):
    assert compare.main(["--ab", str(ab_run(tmp_path, "aa"))]) == 0
    out = capsys.readouterr().out
    assert "A: the working tree at bbbbbbbbbb" in out and "B: REF HEAD = aaaaaaaaaa" in out
    assert "removed: in REF, not in the working tree" in out
    # negative control: numpy 1.5x slower on side A fails, judged against its twin
    assert compare.main(["--ab", str(ab_run(tmp_path, "slow", {"numpy": 1.5}))]) == 1
    base, cur, ab = compare.load_ab(str(tmp_path / "slow"))
    sp = compare.compare_frames(base, cur, compare.GateConfig(direct=True), ab=ab)["speed"]
    row = sp[(sp["impl"] == "numpy") & (sp["model"] == "ALL") & (sp["phase"] == "train_step")].iloc[0]
    assert row["verdict"] == "FAIL" and row["ref"] == "REF" and 1.35 < row["R"] < 1.7
    others = sp[(sp["impl"] != "numpy") & (sp["model"] == "ALL") & (sp["phase"] == "train_step")]
    assert (others["verdict"] != "FAIL").all()  # a slower numpy is not the others' speedup


def test_compare_ab_refuses_a_plain_run(tmp_path, capsys, no_required):
    from test_compare import synthetic_run

    run = synthetic_run(tmp_path / "plain", seed=1)
    assert compare.main(["--ab", str(run)]) == 2
    assert "not an A/B run" in capsys.readouterr().err
    assert compare.main([str(run)]) == 2  # one run without --ab


def test_gate_json_judges_the_confirmation_beside_the_first_measurement(tmp_path, monkeypatch, no_required):
    """gate.json's rows (and so the RESULT line's "speed FAILS: ...") come from the confirmation
    compared as the confirmation is judged, beside the first measurement (the reproduction
    rule reads its R): without it a reproduced suspect read "inconclusive" there while the
    verdict was FAIL."""
    from bench.gate import speed_rows

    first, again = ab_run(tmp_path, "first", {"numpy": 1.5}), ab_run(tmp_path, "again", {"numpy": 1.5})
    seen: list[bool] = []
    real = compare.compare_frames

    def spy(base, cur, cfg=None, first=None, **kw):
        seen.append(first is not None)
        return real(base, cur, cfg, first, **kw)

    monkeypatch.setattr(compare, "compare_frames", spy)
    ab = json.loads((first / RUN_FILE).read_text())["gate_ref"]
    rows = speed_rows(first, again, None, ab)
    assert seen == [False, True]  # the first measurement alone, then the confirmation beside it
    row = next(r for r in rows if r["impl"] == "numpy" and r["model"] == "ALL")
    assert row["measurement"] == "confirmation" and row["verdict"] == "FAIL"
