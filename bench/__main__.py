"""``python -m bench <command>``: data, agree, run, report, compare, history, specs."""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module with ``main(argv) -> int``, help)
COMMANDS: dict[str, tuple[str, str]] = {
    "data": ("bench.plan.data", "fetch and verify MNIST, print where it is"),
    "agree": ("bench.check.agreement", "check implementations against the NumPy float64 reference"),
    "run": ("bench.run", "the benchmark run: agreement, speed, accuracy, reports (tox -e bench)"),
    "report": (
        "bench.report.cli",
        "(re)write a run's reports; several runs: side by side (--out)",
    ),
    "compare": ("bench.judge.compare", "regression gate: compare a run against a baseline"),
    "baseline": ("bench.judge.baseline", "merge several runs' speed records into one gate baseline"),
    "history": (
        "bench.report.history",
        "speed across runs (commits, machines): HTML, Markdown, PNG",
    ),
    "layers": ("bench.measure.probe.layer_timing", "per-function breakdown of a train step (cProfile)"),
    "specs": ("bench.__main__", "list presets and implementations, with availability"),
}


def specs_main(argv: list[str]) -> int:
    from bench.plan import backends
    from bench.plan.presets import preset, preset_names

    argparse.ArgumentParser(prog="python -m bench specs").parse_args(argv)
    for name in preset_names():
        s = preset(name)
        opt = f"{s.train.optimizer} lr={s.train.lr:g}"
        print(f"{name:<10} {s.num_params():>9,} params  loss={s.loss:<13} {opt:<14} init={s.init:<14} {s.description}")
    print()
    for name, (ok, reason) in backends.available().items():
        print(f"{name:<14} {'available' if ok else 'unavailable'}: {reason}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m bench <command> [options]\n\ncommands:")
        for cmd, (_, text) in COMMANDS.items():
            print(f"  {cmd:<8} {text}")
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"error: unknown command {cmd!r}; commands: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    from bench.plan.backends import RegistryError

    try:
        if cmd == "specs":
            return specs_main(rest)
        module = importlib.import_module(COMMANDS[cmd][0])
        return int(module.main(rest) or 0)
    except RegistryError as e:  # two installed plugins claim one backend name
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
