"""GPU report for the CuPy backend: agreement check + speed against PyTorch on CUDA.

Run on a machine with a CUDA GPU (and ``pip install .[gpu]`` plus a CUDA build of torch)::

    python -m implementations.cupy.gpu_report --out reports/gpu-<device>/

It writes ``report.md`` (naming the device), ``agreement.csv``, ``speed.csv`` (medians) and
``speed_raw.csv`` (every timed run). Agreement: every preset in float64 and float32 against
the NumPy float64 reference (``bench.agreement.check`` when present, else
``implementations.cupy.check.compare``). Speed: ``train_step`` of ``mlp`` and ``cnn`` at
batch 50 float32 for ``cupy`` and ``torch-cuda`` in the same process: warm-up steps first,
then ``--repeats`` timed runs of ``--inner`` steps each, the two backends interleaved run by
run, each run bracketed by ``sync()`` so only finished device work is timed; the median per
step is reported. Without a usable GPU it prints why and exits with status 2.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import platform
import re
import statistics
import sys
import time
from pathlib import Path

GOALS = {"mlp": 0.8, "cnn": 0.5}  # cupy speed / torch-cuda speed: the goals the GPU report checks
PRESETS = ("tiny-mlp", "tiny-cnn", "mlp", "mlp-relu", "cnn")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m implementations.cupy.gpu_report", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=None, help="output folder (default reports/gpu-<device>/)")
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--warmup", type=int, default=20, help="untimed steps per backend before timing")
    p.add_argument("--repeats", type=int, default=30, help="timed runs per backend (median reported)")
    p.add_argument("--inner", type=int, default=10, help="train steps per timed run")
    p.add_argument("--models", nargs="+", default=list(GOALS))
    p.add_argument("--presets", nargs="+", default=list(PRESETS), help="presets for the agreement check")
    return p.parse_args(argv)


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def device_info() -> dict:
    import cupy

    dev = cupy.cuda.Device()
    props = cupy.cuda.runtime.getDeviceProperties(dev.id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    return {
        "device": name,
        "compute_capability": dev.compute_capability,
        "memory_gib": round(props["totalGlobalMem"] / 2**30, 1),
        "cuda_driver": cupy.cuda.runtime.driverGetVersion(),
        "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion(),
        "cupy": cupy.__version__,
        "host": platform.node(),
        "python": platform.python_version(),
    }


# ---------------------------------------------------------------------- agreement
def agreement(presets: list[str]) -> list[dict]:
    """One row per (preset, dtype, tensor, phase)."""
    from bench.spec import preset

    rows = []
    for name in presets:
        for dtype in ("float64", "float32"):
            for r in _agreement_rows(preset(name), dtype):
                rows.append({"preset": name, "dtype": dtype, **r})
    return rows


def _agreement_rows(spec, dtype: str) -> list[dict]:
    try:
        from bench.agreement import check
    except ImportError:
        from . import build
        from .check import compare

        return [{**r, "checker": "cupy.check"} for r in compare(build, spec, dtype)]
    res = check("cupy", spec, dtype)
    if res.error:
        return [
            {
                "tensor": "error",
                "phase": "build",
                "max_abs": "",
                "max_rel": "",
                "tol": "",
                "ok": False,
                "checker": f"bench.agreement: {res.error}",
            }
        ]
    return [{**r, "checker": "bench.agreement"} for r in res.rows]


# ---------------------------------------------------------------------- speed
def time_runs(model, x, y, warmup: int, inner: int):
    """A generator: warm up, then each ``next()`` times ``inner`` synced steps (s/step)."""
    for _ in range(warmup):
        model.train_step(x, y)
    model.sync()
    while True:
        model.sync()
        t0 = time.perf_counter()
        for _ in range(inner):
            model.train_step(x, y)
        model.sync()
        yield (time.perf_counter() - t0) / inner


def speed(models: list[str], batch: int, warmup: int, repeats: int, inner: int) -> tuple[list[dict], list[dict], dict]:
    """(median rows, raw rows, {impl: unavailable reason}) for cupy and torch-cuda, float32."""
    import implementations
    from bench.params import init_params
    from bench.spec import preset

    from .check import batch as make_batch

    impls, skipped = {}, {}
    for name in ("cupy", "torch-cuda"):
        try:
            ok, reason = implementations.get(name).available()
        except Exception as e:  # the torch-cuda backend may not exist yet
            ok, reason = False, f"{type(e).__name__}: {e}"
        if ok:
            impls[name] = implementations.get(name)
        else:
            skipped[name] = reason
    medians, raw = [], []
    for model_name in models:
        spec = preset(model_name)
        params = init_params(spec, 0)
        x, y = make_batch(spec, batch)
        timers = {}
        for name, mod in impls.items():
            m = mod.build(spec, params, "float32")
            timers[name] = time_runs(m, m.to_device(x), m.to_device(y), warmup, inner)
        times: dict[str, list[float]] = {name: [] for name in timers}
        for r in range(repeats):  # interleaved so drift hits both alike
            for name, timer in timers.items():
                times[name].append(next(timer))
                raw.append({"model": model_name, "impl": name, "run": r, "ms_per_step": times[name][-1] * 1e3})
        for name, ts in times.items():
            medians.append(
                {
                    "model": model_name,
                    "impl": name,
                    "dtype": "float32",
                    "batch": batch,
                    "median_ms": statistics.median(ts) * 1e3,
                    "min_ms": min(ts) * 1e3,
                    "max_ms": max(ts) * 1e3,
                    "repeats": repeats,
                    "inner": inner,
                    "warmup": warmup,
                }
            )
    return medians, raw, skipped


# ---------------------------------------------------------------------- report
def _write_csv(path: Path, rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        if not rows:
            return
        fields = list(dict.fromkeys(k for r in rows for k in r))  # rows may differ (e.g. "detail")
        w = csv.DictWriter(f, fieldnames=fields, restval="")
        w.writeheader()
        w.writerows(rows)


def ratios(medians: list[dict]) -> list[dict]:
    """cupy speed relative to torch-cuda (torch ms / cupy ms) per model, with the goal."""
    by = {(r["model"], r["impl"]): r["median_ms"] for r in medians}
    out = []
    for model in sorted({r["model"] for r in medians}):
        c, t = by.get((model, "cupy")), by.get((model, "torch-cuda"))
        if c and t:
            goal = GOALS.get(model)
            met = "" if goal is None else ("yes" if t / c >= goal else "no")
            out.append({"model": model, "cupy_ms": c, "torch_cuda_ms": t, "ratio": t / c, "goal": goal, "met": met})
    return out


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def _agreement_summary(agree: list[dict]) -> list[list]:
    rows = []
    for key in dict.fromkeys((r["preset"], r["dtype"]) for r in agree):
        group = [r for r in agree if (r["preset"], r["dtype"]) == key]
        worst = max(group, key=lambda r: (not r["ok"], _ratio(r)))
        passed = "yes" if all(r["ok"] for r in group) else "**no**"
        tensor = f"{worst['tensor']} ({worst['phase']})"
        rows.append([*key, passed, tensor, _fmt(worst["max_rel"]), _fmt(worst["tol"])])
    return rows


def markdown(info: dict, agree: list[dict], medians: list[dict], skipped: dict, settings: dict, argv: list[str]) -> str:
    when = dt.datetime.now().isoformat(timespec="seconds")
    lines = [f"# CuPy GPU report: {info['device']}", ""]
    lines += [f"Generated {when} by `python -m implementations.cupy.gpu_report {' '.join(argv)}`.", ""]
    lines += ["## Device", ""] + [f"- {k}: {v}" for k, v in info.items()]
    lines += ["", "## Backend settings", ""] + [f"- {k}: {v}" for k, v in settings.items()]
    lines += ["", "## Agreement with the NumPy float64 reference", ""]
    lines += _table(["preset", "dtype", "passed", "worst tensor", "rel err", "tol"], _agreement_summary(agree))
    lines += ["", f"## Speed: train_step, float32, batch {medians[0]['batch'] if medians else '?'}", ""]
    speed_rows = [
        [r["model"], r["impl"], f"{r['median_ms']:.3f}", f"{r['min_ms']:.3f}", f"{r['max_ms']:.3f}"] for r in medians
    ]
    lines += _table(["model", "impl", "median ms/step", "min", "max"], speed_rows)
    lines += ["", "Ratio = torch-cuda ms / cupy ms (above 1: CuPy faster); goals in GOALS.", ""]
    ratio_rows = [
        [r["model"], f"{r['cupy_ms']:.3f}", f"{r['torch_cuda_ms']:.3f}", f"{r['ratio']:.2f}", r["goal"], r["met"]]
        for r in ratios(medians)
    ]
    lines += _table(["model", "cupy ms", "torch-cuda ms", "ratio", "goal", "met"], ratio_rows)
    lines += [f"\nSkipped: {name}: {why}" for name, why in skipped.items()]
    return "\n".join(lines) + "\n"


def _ratio(r: dict) -> float:
    try:
        return float(r["max_rel"]) / float(r["tol"])
    except (TypeError, ValueError, ZeroDivisionError):
        return float("inf")


def _fmt(v) -> str:
    return f"{v:.2e}" if isinstance(v, float) else str(v)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    from . import available, settings

    ok, reason = available()
    if not ok:
        print(f"gpu_report: cupy is unavailable here, nothing measured: {reason}", file=sys.stderr)
        print("Run this on a machine with a CUDA GPU and `pip install .[gpu]`.", file=sys.stderr)
        return 2
    info = device_info()
    out = args.out or Path("reports") / f"gpu-{slug(info['device'])}"
    out.mkdir(parents=True, exist_ok=True)
    agree = agreement(args.presets)
    medians, raw, skipped = speed(args.models, args.batch, args.warmup, args.repeats, args.inner)
    all_settings = {"cupy": settings()}
    if "torch-cuda" not in skipped:
        import implementations

        all_settings["torch-cuda"] = implementations.get("torch-cuda").settings()
    _write_csv(out / "agreement.csv", agree)
    _write_csv(out / "speed.csv", medians)
    _write_csv(out / "speed_raw.csv", raw)
    (out / "report.md").write_text(markdown(info, agree, medians, skipped, all_settings, argv))
    print(f"wrote {out}/report.md")
    return 0 if all(r["ok"] for r in agree) else 1


if __name__ == "__main__":
    sys.exit(main())
