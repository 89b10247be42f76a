"""Drill the same-machine A/B gate with real code regressions.

For each factor F, a scratch clone of this repository's HEAD gets one commit that makes a
backend's own ``train_step`` F times slower: its model class's ``train_step`` is wrapped so each
call busy-waits for (F - 1) times the call's own duration (the CPU stays busy, the way a real
extra computation would keep it). The clone then gates that commit against the one before it,
``REPEATS`` times, each a full ``python -m bench run`` in its own processes:

- ``--mode gate-ref`` (default): ``run --gate-ref HEAD~1``; F = 1 makes no commit and gates
  ``HEAD`` against itself (the A/A control);
- ``--mode fallback``: ``run --gate DIR`` where DIR holds one baseline of *another* machine kind
  whose recorded commit is the clone's ``HEAD~1``: the gate finds no stored baseline of this
  kind and falls back to an A/B against that commit (what ``tox -e bench`` does on a new kind).

A regression is *caught* when the run exits 1 and the gate's speed table fails the slowed
backend's train_step row. Results: ``OUT/drill.json`` (every run) and ``OUT/drill.md`` (counts
and the spread of R = B/A samples/s per factor).

    python scripts/gate_drill.py --out /tmp/drill --repeats 10 --factors 1,1.25,1.5,2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# where each backend's model class lives (the drill wraps its train_step)
TARGETS = {
    "torch": ("implementations/torch/model.py", "TorchModel"),
    "numpy": ("implementations/numpy/model.py", "XpModel"),
}
PATCH = """

# --- gate drill: train_step made {factor}x slower (scripts/gate_drill.py); not project code
def _drill_slow(inner):
    import time as _t

    def train_step(self, x, y):
        t0 = _t.perf_counter()
        inner(self, x, y)
        until = t0 + {factor} * (_t.perf_counter() - t0)
        while _t.perf_counter() < until:
            pass

    return train_step


{cls}.train_step = _drill_slow({cls}.train_step)
"""


def sh(args: list[str], cwd: Path) -> str:
    return subprocess.run(args, cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def make_clone(out: Path, factor: float, impl: str) -> Path:
    """A clone of HEAD, with the slowdown committed on top when ``factor`` > 1."""
    repo = out / f"x{factor:g}" / "repo"
    if repo.exists():
        shutil.rmtree(repo)
    repo.parent.mkdir(parents=True, exist_ok=True)
    sh(["git", "clone", "--quiet", str(REPO), str(repo)], out)
    if factor > 1:
        path, cls = TARGETS[impl]
        with open(repo / path, "a", encoding="utf-8") as f:
            f.write(PATCH.format(factor=factor, cls=cls))
        sh(["git", "-c", "user.name=drill", "-c", "user.email=drill@localhost", "commit", "--quiet", "-am",
            f"drill: {impl} train_step {factor:g}x slower"], repo)  # fmt: skip
    return repo


def fallback_baselines(repo: Path, ref: str) -> Path:
    """A baseline folder with one baseline of another machine kind, taken (it says) at ``ref``."""
    src = sorted((repo / "bench" / "baselines" / "quick").iterdir())[0]
    dst = repo.parent / "baselines-other-kind" / "1cpu-other"
    if dst.parent.exists():
        shutil.rmtree(dst.parent)
    shutil.copytree(src, dst)
    meta = json.loads((dst / "run.json").read_text(encoding="utf-8"))
    meta.setdefault("env", {})["git_commit"] = sh(["git", "rev-parse", ref], repo)
    meta["env"]["cpu_cores_usable"], meta["env"]["cpu_simd"] = 1, "other"
    (dst / "run.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    return dst.parent


def one_run(repo: Path, args: argparse.Namespace, ref: str, runs: Path) -> dict[str, Any]:
    gate = ["--gate-ref", ref] if args.mode == "gate-ref" else ["--gate", str(fallback_baselines(repo, ref))]
    cmd = [args.python, "-m", "bench", "run", "--profile", args.profile, "--models", args.models,
           "--impls", args.impls, "--out", str(runs), *gate]  # fmt: skip
    t0 = time.monotonic()
    res = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
    wall = time.monotonic() - t0
    result = next((ln for ln in reversed(res.stdout.splitlines()) if ln.startswith("RESULT:")), "")
    run_dir = (runs / "latest").resolve()
    gate_json = json.loads((run_dir / "gate.json").read_text()) if (run_dir / "gate.json").is_file() else {}
    rows = [r for r in gate_json.get("speed_rows", []) if r.get("model") == "ALL"]
    row = next((r for r in rows if r["impl"] == args.impl), {})
    failing = sorted({r["impl"] for r in rows if r.get("verdict") == "FAIL"})
    first = _first_r(run_dir, args.impl)
    (runs / f"{run_dir.name}.log").write_text(res.stdout + "\n--- stderr ---\n" + res.stderr, encoding="utf-8")
    return {"rc": res.returncode, "result": result, "run": run_dir.name, "wall_s": round(wall, 1),
            "R": row.get("R"), "ci": [row.get("ci_low"), row.get("ci_high")], "verdict": row.get("verdict"),
            "measurement": row.get("measurement"), "R_first": first, "failing": failing,
            "others_R": {r["impl"]: r.get("R") for r in rows if r["impl"] != args.impl},
            "caught": res.returncode == 1 and args.impl in failing}  # fmt: skip


def _first_r(run_dir: Path, impl: str) -> float | None:
    """R of ``impl``'s train_step row in the first measurement (before any confirmation)."""
    try:
        sys.path.insert(0, str(REPO))
        from bench.judge.compare import GateConfig, compare_frames, load_ab

        base, cur, ab = load_ab(str(run_dir))
        sp = compare_frames(base, cur, GateConfig(direct=True), ab=ab)["speed"]
        hit = sp[(sp["impl"] == impl) & (sp["model"] == "ALL") & (sp["phase"] == "train_step")]
        return float(hit["R"].iloc[0]) if len(hit) else None
    except Exception:
        return None


def rejudge(results: list[dict[str, Any]], out: Path, impl: str) -> list[dict[str, Any]]:
    """Each recorded run's train_step rows again, from its run folders, by this checkout's gate
    code (``bench.gate.speed_rows``): ``caught`` and ``R`` as the gate judges them now."""
    sys.path.insert(0, str(REPO))
    from bench.gate import speed_rows

    for r in results:
        runs = out / f"x{r['factor']:g}" / "runs"
        run_dir = runs / r["run"]
        ab = json.loads((run_dir / "run.json").read_text(encoding="utf-8")).get("gate_ref")
        confirm = runs / f"{r['run']}-confirm" / "latest"
        rows = [x for x in speed_rows(run_dir, confirm.resolve() if confirm.exists() else None, None, ab)
                if x.get("model") == "ALL"]  # fmt: skip
        row = next((x for x in rows if x["impl"] == impl), {})
        r["failing"] = sorted({x["impl"] for x in rows if x.get("verdict") == "FAIL"})
        r |= {"R": row.get("R"), "verdict": row.get("verdict"), "measurement": row.get("measurement")}
        r["caught"] = r["rc"] == 1 and impl in r["failing"]
    return results


def summary(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [f"# Gate drill ({args.mode}): {args.impl} train_step slowed, `--models {args.models} --impls "
             f"{args.impls}`, profile {args.profile}", "",
             "| factor | runs | caught | failed A/A | R median (min-max) | R first measurement, median (max) | "
             "confirmations | wall s, median |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for f in args.factors:
        rs = [r for r in results if r["factor"] == f]
        if not rs:
            continue
        rr = [r["R"] for r in rs if r["R"] is not None]
        r1 = [r["R_first"] for r in rs if r["R_first"] is not None]
        caught = sum(r["caught"] for r in rs)
        fails = sum(r["rc"] != 0 for r in rs) if f == 1 else ""
        spread = f"{statistics.median(rr):.3f} ({min(rr):.3f}-{max(rr):.3f})" if rr else ""
        first = f"{statistics.median(r1):.3f} ({max(r1):.3f})" if r1 else ""
        confirm = sum(r["measurement"] == "confirmation" for r in rs)
        wall = statistics.median(r["wall_s"] for r in rs)
        lines.append(f"| {f:g} | {len(rs)} | {caught if f > 1 else ''} | {fails} | {spread} | {first} | {confirm} | "
                     f"{wall:.0f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--factors", default="1,1.25,1.5,2", type=lambda s: [float(x) for x in s.split(",")])
    ap.add_argument("--impl", default="torch", choices=sorted(TARGETS), help="the backend slowed")
    ap.add_argument("--impls", default="numpy,torch")
    ap.add_argument("--models", default="mlp")
    ap.add_argument("--profile", default="quick")
    ap.add_argument("--mode", choices=("gate-ref", "fallback"), default="gate-ref")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--rejudge", action="store_true",
                    help="measure nothing: judge OUT/drill.json again with this checkout's gate code")  # fmt: skip
    args = ap.parse_args(argv)
    if args.rejudge:
        results = rejudge(json.loads((args.out / "drill.json").read_text(encoding="utf-8")), args.out, args.impl)
        (args.out / "drill.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
        (args.out / "drill.md").write_text(summary(results, args), encoding="utf-8")
        print(summary(results, args))
        return 0
    if not os.environ.get("MNIST_DIR"):
        print("warning: MNIST_DIR is not set: each clone's run finds MNIST on its own", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    for f in args.factors:
        repo = make_clone(args.out, f, args.impl)
        ref = "HEAD~1" if f > 1 else "HEAD"
        for i in range(args.repeats):
            r = one_run(repo, args, ref, repo.parent / "runs") | {"factor": f, "repeat": i}
            results.append(r)
            print(f"x{f:g} #{i + 1}: rc {r['rc']} caught {r['caught']} R {r['R']} (first {r['R_first']}) "
                  f"{r['wall_s']} s: {r['result'][:160]}", flush=True)  # fmt: skip
            (args.out / "drill.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
            (args.out / "drill.md").write_text(summary(results, args), encoding="utf-8")
    print(summary(results, args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
