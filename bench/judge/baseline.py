"""``python -m bench baseline RUN [RUN ...] --out DIR``: one gate baseline from several runs.

The gate judges a speed case by its fastest worker process (``bench.judge.compare.center``), so a
baseline case whose processes *all* ran through a neighbour's burst would make every later run
look faster, or its other implementations slower, until the baseline is replaced. Merging
the speed records of a few runs of the same profile on the same machine into one baseline
(3 runs x 3 processes: 9 per case) makes that vanishingly rare. Records merged:

- ``speed``: every run's, the process index offset so that each stays its own process;
- ``peak``: every run's (the GEMM before and after each run's cases);
- (each merged record takes the first run's ``run_id``: the baseline is read as one run);
- everything else (agreement, accuracy, availability, errors, compile, settings): the first
  run's, as is.

``run.json`` is the first run's, with ``merged_from`` listing the run ids. Runs of different
profiles, thread counts, pinning, CPU models, SIMD extensions or commits are refused: a baseline
is one configuration.

**One baseline per machine kind.** The gate compares in-run ratios (each implementation against
NumPy), which survive a faster or slower machine of one kind but not a change of kind: on the
2-core AVX-512 machine Keras (oneDNN) runs the cnn about 2x faster against NumPy than on the
2-core AVX2 one, so a baseline of one kind would fail the other's Keras, or hide a 2x regression.
A gate baseline is therefore a folder of baselines, one subfolder per machine kind
(``machine_kind``: usable cores and SIMD extensions, from ``run.json``'s ``env``), and
``select`` takes the one of the current run's kind. With none of that kind, the closest is
used for the machine-independent checks (agreement, crashes, accuracy) and speed is *not
gated*, which the verdict line says (``Selection.speed_note``). A plain run folder is still
accepted as a baseline (its kind is checked the same way).
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measure.ref_tree import REPO, Plan, RefError, has_commit, plan, repo_root, run_git
from bench.measure.results import RUN_FILE, append_records, read_records

SAME = ("threads", "cpus")  # run.json keys that must agree
SAME_ENV = ("cpu_model", "cpu_simd", "git_commit", "malloc", "blas_wait")  # run.json env keys that must agree
MERGED_KINDS = ("speed", "peak")


class BaselineError(Exception):
    """Runs that cannot form one baseline; the message says which key differs."""


def _meta(run_dir: Path) -> dict[str, Any]:
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise BaselineError(f"{run_dir}: not a run directory (no {RUN_FILE})")
    return json.loads(path.read_text(encoding="utf-8"))


def _profile_name(meta: dict[str, Any]) -> Any:
    profile = meta.get("profile")
    return profile.get("name") if isinstance(profile, dict) else profile


def _check_same(metas: list[tuple[Path, dict[str, Any]]]) -> None:
    for run_dir, meta in metas:
        if meta.get("injected_slowdown"):
            raise BaselineError(f"{run_dir} is a gate-validation run (injected slowdown): not a baseline")
    (first_dir, first), *rest = metas
    for run_dir, meta in rest:
        pairs = [("profile.name", _profile_name(first), _profile_name(meta))]
        pairs += [(k, first.get(k), meta.get(k)) for k in SAME]
        pairs += [(f"env.{k}", first.get("env", {}).get(k), meta.get("env", {}).get(k)) for k in SAME_ENV]
        for key, a, b in pairs:
            if a != b:
                raise BaselineError(f"{run_dir} differs from {first_dir} in {key}: {b!r} != {a!r}")


def machine_kind(env: dict[str, Any] | None) -> str | None:
    """``"2cpu-avx2-fma"``: usable cores and SIMD extensions (``bench.measure.envinfo.SIMD_FLAGS``), what
    moves the in-run ratios between machines; None when the run did not record them."""
    env = env or {}
    simd, cores = env.get("cpu_simd"), env.get("cpu_cores_usable") or env.get("cpu_cores")
    if not simd or not cores:
        return None
    return f"{cores}cpu-" + "-".join(str(simd).replace(" ", "_").split(","))


def _kind_of(run_dir: Path) -> str | None:
    return machine_kind(_meta(run_dir).get("env"))


def _is_run(path: Path) -> bool:
    return (path / RUN_FILE).is_file() and (path / "results.jsonl").is_file()


@dataclass(frozen=True)
class Selection:
    """The baseline run the gate compares with, and whether its speed rows can be gated."""

    given: Path  # the baseline argument: a run folder or a folder of machine-kind baselines
    path: Path  # the run compared with
    kind: str | None  # its machine kind
    current_kind: str | None
    available: tuple[str, ...]  # the kinds ``given`` holds

    @property
    def same_kind(self) -> bool:
        """Unknown on either side (a run without ``env``) is not a mismatch."""
        return self.kind is None or self.current_kind is None or self.kind == self.current_kind

    @property
    def speed_note(self) -> str | None:
        """Why speed is not gated (None: it is)."""
        if self.same_kind:
            return None
        return (f"speed not gated: {self.given} has no baseline of this run's machine kind ({self.current_kind}; "
                f"it holds {', '.join(self.available)}); only agreement, crashes and accuracy were gated, "
                f"against {self.path}. Take a baseline on this machine kind: bench/baselines/README.md")  # fmt: skip


def _closest(candidates: list[Path], kinds: list[str | None], current_kind: str | None) -> Path:
    """Same cores and the most SIMD extensions in common; ties by folder name."""
    cur = set((current_kind or "").split("-"))

    def shared(i: int) -> tuple[int, str]:
        return (len(cur & set((kinds[i] or "").split("-"))), candidates[i].name)

    return candidates[max(range(len(candidates)), key=shared)]


def select(baseline: str | Path, current_env: dict[str, Any] | None) -> Selection:
    """The baseline run for a run of ``current_env``: ``baseline`` itself when it is a run folder,
    else its subfolder of the current machine kind (the closest one when none matches: then
    ``speed_note`` says speed is not gated). Raises ``BaselineError`` when there is no baseline
    run, or two of the current kind."""
    base, current = Path(baseline), machine_kind(current_env)
    if not base.exists():
        raise BaselineError(f"run directory not found: {base}")
    if _is_run(base):
        kind = _kind_of(base)
        return Selection(base, base, kind, current, (kind or "kind unknown",))
    candidates = sorted(d for d in base.iterdir() if d.is_dir() and _is_run(d)) if base.is_dir() else []
    if not candidates:
        raise BaselineError(f"{base}: not a run directory, nor a folder of machine-kind baseline runs")
    kinds = [_kind_of(d) for d in candidates]
    pairs = list(zip(candidates, kinds, strict=True))
    shown = tuple(d.name if d.name == k else f"{d.name} ({k or 'kind unknown'})" for d, k in pairs)
    same = [d for d, k in pairs if current is not None and k == current]
    if len(same) > 1:
        names = ", ".join(d.name for d in same)
        raise BaselineError(f"{base}: {len(same)} baselines of machine kind {current}: {names}")
    chosen = same[0] if same else _closest(candidates, kinds, current)
    return Selection(base, chosen, _kind_of(chosen), current, shown)


def merge(run_dirs: list[Path], out: Path) -> int:
    """Write the merged baseline to ``out`` (replaced if it exists); returns the speed records."""
    metas = [(d, _meta(d)) for d in run_dirs]
    _check_same(metas)
    records = read_records(run_dirs[0])
    offset = 1 + max((int(r.get("process") or 0) for r in records if r["kind"] == "speed"), default=-1)
    for d in run_dirs[1:]:
        extra = [r for r in read_records(d) if r["kind"] in MERGED_KINDS]
        for r in extra:
            r["run_id"] = metas[0][1].get("run_id", r.get("run_id"))  # one run, as the loaders expect
            if r["kind"] == "speed":
                r["process"] = int(r.get("process") or 0) + offset
        offset = 1 + max((int(r["process"]) for r in extra if r["kind"] == "speed"), default=offset - 1)
        records += extra
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    meta = metas[0][1] | {"merged_from": [m.get("run_id", str(d)) for d, m in metas]}
    (out / RUN_FILE).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    append_records(out, records)
    return sum(r["kind"] == "speed" for r in records)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench baseline", description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="run directories of one profile on one machine")
    ap.add_argument("--out", required=True,
                    help="baseline directory to write: a machine kind's folder (e.g. bench/baselines/quick/KIND; "
                         "the kind is printed)")  # fmt: skip
    args = ap.parse_args(argv)
    try:
        n = merge([Path(r) for r in args.runs], Path(args.out))
    except BaselineError as e:
        print(f"error: {e}")
        return 2
    kind = _kind_of(Path(args.out))
    print(f"baseline {args.out}: {len(args.runs)} runs, {n} speed records; machine kind {kind or 'unknown'}")
    if kind and Path(args.out).name != kind:
        print(f"note: the gate picks a baseline by its run.json, not its folder name; its kind's name is {kind}")
    return 0


def default_branch(cwd: Path = REPO) -> str | None:
    """The remote's default branch (``origin/HEAD``), else the first of origin/main, origin/master,
    main, master that exists."""
    res = run_git(["symbolic-ref", "--quiet", "--short", "refs/remotes/origin/HEAD"], cwd)
    if res.returncode == 0 and res.stdout.strip():
        return res.stdout.strip()
    for name in ("origin/main", "origin/master", "main", "master"):
        if run_git(["rev-parse", "--verify", "--quiet", f"{name}^{{commit}}"], cwd).returncode == 0:
            return name
    return None


def fallback(baseline: str, impls: list[str], asked: bool, cwd: Path = REPO) -> tuple[Plan | None, str | None]:
    """``--gate DIR`` with no stored baseline of this machine kind: the A/B that gates speed
    instead, against the commit the nearest baseline was taken at, else the merge base with the
    default branch; ``(None, why)`` when neither can be measured (speed is then not gated, and
    the verdict line says why), ``(None, None)`` when DIR has a baseline of this kind."""
    from bench.measure.envinfo import kind_env

    sel = select(baseline, kind_env())
    if sel.same_kind:
        return None, None
    base = f"no stored baseline of this machine kind ({sel.current_kind})"
    recorded = str(json.loads((sel.path / "run.json").read_text(encoding="utf-8")).get("env", {}).get("git_commit", ""))
    sha = recorded.split("+")[0]
    tried = []
    try:
        repo_root(cwd)
    except RefError as e:
        return None, f"{base}, and no A/B: {e}"

    def attempt(rev: str, why: str) -> Plan | None:
        try:
            return plan(rev, impls, asked, f"speed gated by A/B against {rev[:10]}, {why}", cwd)
        except RefError as e:
            tried.append(str(e))
            return None

    if sha and sha != "unknown" and has_commit(sha, cwd):
        p = attempt(sha, f"the commit of the nearest baseline {sel.path.name} ({base})")
        if p is not None:
            return p, None
    else:
        tried.append(f"the nearest baseline's commit {sha[:10] or '(none recorded)'} is not in this clone")
    branch = default_branch(cwd)
    res = run_git(["merge-base", "HEAD", branch], cwd) if branch else None
    if res is not None and res.returncode == 0 and res.stdout.strip():
        p = attempt(res.stdout.strip(), f"the merge base with {branch} ({base}; {tried[-1]})")
        if p is not None:
            return p, None
    else:
        tried.append("no merge base with a default branch" + (f" ({branch})" if branch else " (none found)"))
    return None, f"{base}, and no commit to A/B against: {'; '.join(tried)}"
