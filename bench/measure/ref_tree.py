"""REF's code beside the working tree's: what ``python -m bench run --gate-ref REF`` measures.

A same-machine A/B: every speed case runs twice, once with the working tree's code (side A)
and once with REF's (side B), in separate fresh worker processes, interleaved case by case and
process by process (``bench.measure.run_cases``), and the gate compares the two (``bench.judge.compare``,
``--ab``). This module holds REF's side:

- ``plan(rev, ...)`` resolves REF to a commit and reads its backend registry from git (its
  ``pyproject.toml`` entry points, group ``nnbench.implementations``, else the ``_REGISTRY``
  literal of its ``implementations/__init__.py``), without checking anything out: a REF git
  cannot resolve, a directory that is not a git repository, and a REF with none of the run's
  implementations are ``RefError`` (exit 2) before anything runs;
- ``RefTree(commit)`` checks REF out into a temporary ``git worktree`` and removes it when the
  run ends, also on Ctrl-C, SIGTERM (``bench.run`` turns it into ``KeyboardInterrupt``) and
  errors. Side-B workers start in an overlay folder that holds only REF's ``implementations``
  package (``code_root``): the backends' own code (models, kernels, shards, optimizer) is REF's;
  the harness that times both sides, and the spec and parameter code it hands them, is the
  working tree's, so the method is the same on both sides;
- ``check_contract`` imports each of REF's backend modules in such a worker first: one that
  does not import against this harness, or lacks a function of the contract, is ``RefError``
  naming REF and what is missing;
- ``tree_state()`` is what side A was: HEAD, whether the tree is dirty, and a hash of the
  uncommitted changes (``git diff HEAD`` and the untracked files), recorded in ``run.json``.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.plan.sides import is_ref

REPO = Path(__file__).resolve().parents[2]
CODE_ENV = "NNBENCH_REF_CODE"  # the overlay folder side-B workers start in, while a run holds REF's tree
COMMIT_ENV = "NNBENCH_REF_COMMIT"  # the commit checked out there
CONTRACT = ("available", "build", "settings")  # what the harness calls on a backend module
ENTRY_POINT_GROUP = "nnbench.implementations"


class RefError(Exception):
    """A REF that cannot be measured (exit 2, before anything runs); the message says why."""


def run_git(args: list[str], cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    except FileNotFoundError as e:
        raise RefError("git is not installed: --gate-ref needs git") from e


def repo_root(cwd: Path = REPO) -> Path:
    """The git repository the harness runs from; ``RefError`` when there is none."""
    res = run_git(["rev-parse", "--show-toplevel"], cwd)
    if res.returncode != 0:
        raise RefError(f"{cwd} is not a git repository ({res.stderr.strip()}): --gate-ref compares git revisions")
    return Path(res.stdout.strip())


def resolve(rev: str, cwd: Path = REPO) -> str:
    """The full commit id of ``rev`` (any revision git understands)."""
    repo_root(cwd)
    res = run_git(["rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"], cwd)
    if res.returncode != 0 or not res.stdout.strip():
        raise RefError(f"--gate-ref {rev!r}: git cannot resolve it to a commit in {repo_root(cwd)}")
    return res.stdout.strip()


def has_commit(sha: str, cwd: Path = REPO) -> bool:
    return run_git(["cat-file", "-e", f"{sha}^{{commit}}"], cwd).returncode == 0


def _show(commit: str, path: str, cwd: Path = REPO) -> str | None:
    res = run_git(["show", f"{commit}:{path}"], cwd)
    return res.stdout if res.returncode == 0 else None


def _entry_points(pyproject: str | None) -> dict[str, str] | None:
    if pyproject is None:
        return None
    try:
        data = tomllib.loads(pyproject)
    except tomllib.TOMLDecodeError:
        return None
    group = data.get("project", {}).get("entry-points", {}).get(ENTRY_POINT_GROUP)
    return {str(k): str(v).split(":")[0].strip() for k, v in group.items()} if isinstance(group, dict) else None


def _registry_literal(source: str | None) -> dict[str, str] | None:
    """``_REGISTRY = {...}`` of an ``implementations/__init__.py``, read with ``ast``."""
    if source is None:
        return None
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign):
            targets = node.targets
        else:
            targets = [node.target] if isinstance(node, ast.AnnAssign) else []
        if any(isinstance(t, ast.Name) and t.id == "_REGISTRY" for t in targets) and node.value is not None:
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return None
            return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else None
    return None


def ref_registry(commit: str, rev: str, cwd: Path = REPO) -> dict[str, str]:
    """``{backend name: module}`` of REF's own backends."""
    found = _entry_points(_show(commit, "pyproject.toml", cwd))
    if found is None:
        found = _registry_literal(_show(commit, "implementations/__init__.py", cwd))
    if not found:
        raise RefError(f"--gate-ref {rev} ({commit[:10]}): no backend registry there (neither an "
                       f"'{ENTRY_POINT_GROUP}' entry-point group in pyproject.toml nor _REGISTRY in "
                       "implementations/__init__.py)")  # fmt: skip
    return found


def tree_state(cwd: Path = REPO) -> dict[str, Any]:
    """Side A: HEAD, whether the working tree has uncommitted changes (tracked or untracked), and
    the SHA-256 of those changes (``git diff HEAD --binary``, then each untracked file's name and
    bytes), so two runs of the same dirty tree can be told from two different ones."""
    head = run_git(["rev-parse", "HEAD"], cwd).stdout.strip() or None
    diff = run_git(["diff", "HEAD", "--binary"], cwd).stdout
    untracked = [p for p in run_git(["ls-files", "--others", "--exclude-standard", "-z"], cwd).stdout.split("\0") if p]
    h = hashlib.sha256(diff.encode())
    for p in sorted(untracked):
        h.update(b"\0" + p.encode() + b"\0")
        try:
            h.update((cwd / p).read_bytes())
        except OSError:
            pass
    dirty = bool(diff or untracked)
    return {"commit": head, "dirty": dirty, "diff_sha256": h.hexdigest() if dirty else None}


@dataclass
class Plan:
    """What an A/B run compares: REF, its commit and its backends; ``why`` says what chose REF
    when the user did not (the fallback of ``--gate DIR`` with no stored baseline of this kind)."""

    rev: str
    commit: str
    registry: dict[str, str]
    why: str | None = None
    new: list[str] = field(default_factory=list)  # in the working tree only: measured, not gated
    removed: list[str] = field(default_factory=list)  # in REF only: not measured

    @property
    def short(self) -> str:
        return self.commit[:10]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Plan:
        return cls(**{k: d[k] for k in ("rev", "commit", "registry", "why", "new", "removed") if k in d})


def plan(rev: str, impls: list[str], asked: bool, why: str | None = None, cwd: Path = REPO) -> Plan:
    """Resolve REF and match its backends with the run's ``impls`` (``asked``: given by
    ``--impls``, else every backend of the working tree)."""
    commit = resolve(rev, cwd)
    registry = ref_registry(commit, rev, cwd)
    both = [i for i in impls if i in registry]
    if not both:
        raise RefError(f"--gate-ref {rev} ({commit[:10]}) has no implementation the run asked for "
                       f"({', '.join(impls)}); it has: {', '.join(registry)}")  # fmt: skip
    new = [i for i in impls if i not in registry]
    removed = [] if asked else [i for i in registry if i not in impls]
    return Plan(rev, commit, registry, why, new, removed)


def code_root(impl: str) -> Path | None:
    """Where a worker of ``impl`` starts: the overlay of REF's ``implementations`` for a side-B
    case, None (the repository) for side A."""
    if not is_ref(impl):
        return None
    root = os.environ.get(CODE_ENV)
    if not root or not Path(root).is_dir():
        raise RefError(f"{impl}: REF's checkout is not held by this run (no {CODE_ENV}); run with --gate-ref")
    return Path(root)


class RefTree:
    """REF checked out into a temporary git worktree while the ``with`` block runs; removed on
    the way out, whatever the way (a nested run of the same commit, the gate's confirmation,
    reuses the one held)."""

    def __init__(self, commit: str, cwd: Path = REPO) -> None:
        self.commit, self.cwd = commit, cwd
        self.tmp: Path | None = None
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> RefTree:
        if os.environ.get(COMMIT_ENV) == self.commit and os.environ.get(CODE_ENV):
            return self  # held by the run around this one
        self.tmp = Path(tempfile.mkdtemp(prefix="nnbench-ref-"))
        tree = self.tmp / "tree"
        res = run_git(["worktree", "add", "--detach", "--quiet", str(tree), self.commit], self.cwd)
        if res.returncode != 0:
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise RefError(f"git worktree add {self.commit[:10]} failed: {res.stderr.strip()}")
        code = self.tmp / "code"
        code.mkdir()
        if (tree / "implementations").is_dir():
            (code / "implementations").symlink_to(tree / "implementations", target_is_directory=True)
        self.saved = {k: os.environ.get(k) for k in (CODE_ENV, COMMIT_ENV)}
        os.environ[CODE_ENV], os.environ[COMMIT_ENV] = str(code), self.commit
        return self

    @property
    def path(self) -> Path | None:
        """The worktree itself (None when a surrounding run holds it)."""
        return self.tmp / "tree" if self.tmp else None

    def __exit__(self, *exc: Any) -> None:
        if self.tmp is None:
            return
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        run_git(["worktree", "remove", "--force", str(self.tmp / "tree")], self.cwd)
        shutil.rmtree(self.tmp, ignore_errors=True)
        run_git(["worktree", "prune"], self.cwd)
        self.tmp = None


def check_contract(p: Plan, names: list[str]) -> None:
    """Import each of REF's backends ``names`` in a side-B worker (the held ``RefTree``) and check
    the contract's functions; ``RefError`` naming REF, the backend and what is missing."""
    code = code_root("probe@ref")
    modules = {n: p.registry[n] for n in names}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(x for x in (str(code), str(REPO), env.get("PYTHONPATH", "")) if x)
    cmd = [sys.executable, "-m", "bench.measure.worker", "contract", "--modules", json.dumps(modules)]
    res = subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True, timeout=300)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("@@nnbench ")), None)
    if res.returncode != 0 or line is None:
        raise RefError(f"--gate-ref {p.rev} ({p.short}): the contract probe failed: {res.stderr.strip()[-2000:]}")
    problems = json.loads(line[len("@@nnbench ") :]).get("contract", {})
    bad = {n: why for n, why in problems.items() if why}
    if bad:
        text = "; ".join(f"{n} ({modules[n]}): {why}" for n, why in bad.items())
        raise RefError(f"--gate-ref {p.rev} ({p.short}): backend contract incompatible with this harness: {text}")
