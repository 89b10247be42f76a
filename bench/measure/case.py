"""One case, (implementation, model, dtype), measured in this worker process (``Case``), and what
every worker command shares: the run's backend module (``backend``), progress lines (``emit``).

Speed: the first call of each phase on a freshly built model in this fresh process is the cold
(compile/JIT) time; agreement then runs (and warms up further) before the timed rounds.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench.core.threads import configured_threads
from bench.measure.run_state import mark_done, speed_part
from bench.plan.profile import effective_profile
from bench.plan.sides import is_ref

MARK = "@@nnbench "
# training steps from the same parameters, data and dropout seed before each speed process hashes the
# parameters (the cold probe's first step and these more): bit-identical across processes or not
DETERMINISM_STEPS = 3
PHASE_FLOPS = {"forward": ("forward",), "loss_and_grads": ("forward", "backward"), "train_step": ("train_step",)}


def emit(**event: Any) -> None:
    print(MARK + json.dumps(event, default=str), flush=True)


def load_run(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "run.json").read_text(encoding="utf-8"))


def backend(run: dict[str, Any], impl: str) -> Any:
    """The backend module of ``impl`` from the run's registry (``run.json``): a side-B name
    (``numpy@ref``) maps to REF's module, which this worker imports from REF's checkout
    (``bench.measure.ref_tree.code_root``: the folder this worker was started in)."""
    from bench.plan import backends

    for name, module in run.get("registry", {}).items():  # agreement looks names up there
        backends.register(name, module)
    if is_ref(impl):
        alias_legacy_core()
    return backends.get(impl)


# Where a backend of an older revision imports the core from: old path -> today's module.
LEGACY_CORE = {
    "bench.spec": "bench.core.spec",
    "bench.params": "bench.core.params",
    "bench.threads": "bench.core.threads",
}


def alias_legacy_core() -> None:
    """Let REF's backends import the core by the paths of their own revision (a REF from before
    the stage packages imports ``bench.spec``): the names point at today's core modules."""
    import importlib

    for old, new in LEGACY_CORE.items():
        if old not in sys.modules:
            sys.modules[old] = importlib.import_module(new)


def error_status(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "oom"
    if isinstance(exc, NotImplementedError):
        return "not_implemented"
    return "crash"


class Case:
    """One (impl, model, dtype) in this process."""

    def __init__(
        self, run_dir: Path, impl: str, model: str, dtype: str, validated: bool | None, process: int = 0
    ) -> None:
        from bench.core.spec import ModelSpec

        self.run_dir, self.impl, self.model_name, self.dtype = run_dir, impl, model, dtype
        self.run = load_run(run_dir)
        self.module = backend(self.run, impl)
        self.spec = ModelSpec.from_dict(self.run["specs"][model])
        self.profile = effective_profile(self.run["profile"], impl, model)
        self.validated = validated
        self.process = process  # which of the case's speed processes this is (0: the full case)
        self.model: Any = None  # built by the cold probe, reused for the timed rounds
        self.cold: dict[str, float] = {}
        self.digest: dict[str, Any] = {}  # the parameters' hash after the cold probe's training steps

    def record(self, kind: str, **fields: Any) -> dict[str, Any]:
        from bench.measure.results import make_record

        base = {"run_id": self.run["run_id"], "impl": self.impl, "model": self.model_name, "dtype": self.dtype}
        return make_record(kind, **{**base, **fields})

    def write(self, records: list[dict[str, Any]]) -> None:
        from bench.measure.results import append_records

        append_records(self.run_dir, records)

    def run_part(self, part: str) -> None:
        emit(part=part, phase=part)
        try:
            records = getattr(self, f"part_{part}")()
            status = next((r["status"] for r in records if r["kind"] == "error"), "ok")
        except BaseException as e:  # noqa: B036 - MemoryError, KeyboardInterrupt of a hang test
            if isinstance(e, KeyboardInterrupt | SystemExit):
                raise
            status = error_status(e)
            tb = traceback.format_exc()
            records = [self.record("error", phase=part, status=status, error=f"{type(e).__name__}: {e}\n{tb[-3000:]}")]
            if part == "agreement":
                self.validated = False
        if part == "settings":  # per implementation and dtype, not per model
            for r in records:
                r["model"] = None
        self.write(records)
        key = speed_part(self.process) if part == "speed" else part
        mark_done(self.run_dir, self.impl, None if part == "settings" else self.model_name, self.dtype, key, status)
        emit(part=part, done=status)

    # ------------------------------------------------------------------ settings
    def part_settings(self) -> list[dict[str, Any]]:
        rows = [self.record("setting", key="harness_threads", value=str(configured_threads()))]
        for key, value in self.module.settings().items():
            rows.append(self.record("setting", key=str(key), value=str(value)))
        return rows

    # ------------------------------------------------------------------ agreement
    def part_agreement(self) -> list[dict[str, Any]]:
        from bench.check.agreement import check

        a = self.profile.get("agreement", {})
        res = check(
            self.impl,
            self.spec,
            self.dtype,
            seed=int(a.get("seed", 0)),
            batch=int(a.get("batch", 8)),
            steps=int(a.get("steps", 3)),
        )
        cols = ("tensor", "phase", "max_abs", "max_rel", "tol", "ok", "detail")
        rows = [
            self.record(
                "agreement",
                first_divergent_layer=res.first_divergent_layer,
                **{k: _finite(r.get(k)) for k in cols if k in r},
            )
            for r in res.rows
        ]
        self.validated = bool(res.passed)
        if not res.passed:
            status = "disagrees" if res.error is None else getattr(res, "status", "error")
            if status == "error":  # agreement caught the exception; classify it from its text
                status = "oom" if "MemoryError" in (res.error or "") else "crash"
            text = (
                res.error
                or "; ".join(
                    f"{r['phase']} {r['tensor']} max_rel={r['max_rel']:.3g} > tol {r['tol']:.0e}"
                    for r in res.rows
                    if not r["ok"]
                )[:3000]
            )
            rows.append(self.record("error", phase="agreement", status=status, error=text))
        return rows

    # ------------------------------------------------------------------ speed
    def cold_probe(self, batch: int) -> None:
        """Build, then the first call of each phase, in this fresh process: compile/JIT included."""
        from bench.core.params import init_params

        params = init_params(self.spec, seed=0)
        x, y = self.batch(batch)
        t0 = time.perf_counter()
        self.model = self.module.build(self.spec, params, self.dtype)
        self.cold["build"] = time.perf_counter() - t0
        fns = self.phase_fns(x, y)
        for phase, fn in fns.items():
            emit(phase=f"cold {phase} b={batch}")
            t0 = time.perf_counter()
            fn()
            self.cold[phase] = time.perf_counter() - t0
        if "train_step" in fns:  # the same seed in every process: the same bits?
            for _ in range(DETERMINISM_STEPS - 1):
                fns["train_step"]()
            self.digest = {
                "steps": DETERMINISM_STEPS,
                "batch_size": batch,
                "digest": params_digest(self.model.params()),
            }

    def batch(self, n: int) -> tuple[Any, Any]:
        import numpy as np

        rng = np.random.default_rng(int(self.profile["speed"].get("data_seed", 1)) + n)
        x = rng.random((n, *self.spec.input_shape)).astype(self.dtype)  # (N, C, H, W)
        y = np.eye(self.spec.num_classes, dtype=self.dtype)[rng.integers(0, self.spec.num_classes, n)]  # (N, K)
        return x, y

    def phase_fns(self, x: Any, y: Any) -> dict[str, Any]:
        """The timed callables; ``sync()`` inside each, device inputs prepared outside. forward
        and loss_and_grads run their device forms (``Model.device_forward``,
        ``device_loss_and_grads``): no host copy or layout change in the timed region, in any
        backend (``sgd_step``, a host-contract call, is the exception and says so by name)."""
        m = self.model
        xd, yd = m.to_device(x), m.to_device(y)
        m.sync()
        lr = self.spec.train.lr
        fns = {
            "forward": lambda: (m.device_forward(xd), m.sync()),
            "loss_and_grads": lambda: (m.device_loss_and_grads(xd, yd), m.sync()),
            "train_step": lambda: (m.train_step(xd, yd), m.sync()),
            "sgd_step": lambda: (m.sgd_step(x, y, lr), m.sync()),
        }
        from bench.measure import inject

        inj = inject.parse(self.run.get("injected_slowdown"))
        return {p: inject.slowed(fns[p], inj.get((self.impl, p), 1.0)) for p in self.profile["speed"]["phases"]}

    def part_speed(self) -> list[dict[str, Any]]:
        from bench.measure.timing import Timer, TimingConfig

        sp = self.profile["speed"]
        sizes = [int(b) for b in sp["batch_sizes"]]
        if self.model is None:
            self.cold_probe(sizes[0])
        timer = Timer(TimingConfig.from_profile(sp), group=f"{self.impl}/{self.model_name}/{self.dtype}")
        rows: list[dict[str, Any]] = []
        steady: dict[str, float] = {}
        try:
            for b in sizes:
                x, y = self.batch(b)
                for phase, fn in self.phase_fns(x, y).items():
                    emit(phase=f"speed {phase} b={b}")
                    name = f"{self.impl}-{self.model_name}-{self.dtype}-{phase}-b{b}"
                    info = {"impl": self.impl, "model": self.model_name, "phase": phase, "batch": b}
                    m = timer.measure(name, fn, info)
                    rows.append(self.speed_row(phase, b, m))
                    if b == sizes[0]:
                        steady[phase] = m.median_s
        finally:
            out = self.run_dir / "benchmarks"
            out.mkdir(exist_ok=True)
            timer.save_json(str(out / f"{self.impl}-{self.model_name}-{self.dtype}.json"))
        if self.digest:
            rows.append(self.record("determinism", process=self.process, **self.digest))
        for phase, cold in self.cold.items() if self.process == 0 else ():  # cold only in the first
            rows.append(
                self.record(
                    "compile",
                    phase=phase,
                    cold_s=cold,
                    steady_s=steady.get(phase),
                    warm_cache_s=None,
                    batch_size=sizes[0],
                )
            )
        return rows

    def speed_row(self, phase: str, b: int, m: Any) -> dict[str, Any]:
        import os

        load = os.getloadavg()[0]  # 1-minute load average, sampled right after the timed rounds
        fl = self.model.flops(b) if hasattr(self.model, "flops") else self.spec.flops(b)  # what it performs
        keys = PHASE_FLOPS.get(phase, ("train_step",))
        flops = sum(fl[k] for k in keys)
        model_flops = sum(self.spec.flops(b)[k] for k in keys)  # the model's direct count, whatever the algorithm
        # the roofline's memory term: the CPU's roofs say nothing of a GPU's
        gpu = "gpu" in tuple(getattr(self.module, "REQUIRES", ()))
        traffic = {} if gpu else self.spec.traffic(b, _itemsize(self.dtype)).get(phase, {})
        return self.record(
            "speed", phase=phase, batch_size=b, rounds=m.rounds, iterations=m.iterations,
            warmup_rounds=m.warmup_calls, median_s=m.median_s, iqr_s=m.iqr_s,
            mean_s=m.mean_s, min_s=m.min_s, samples_s=m.samples_s, samples_per_s=b / m.median_s,
            gflops=flops / m.median_s / 1e9, gflops_model=model_flops / m.median_s / 1e9,
            bytes=traffic.get("bytes"), working_set_bytes=traffic.get("working_set"),
            validated=self.validated, process=self.process, loadavg=load,
        )  # fmt: skip

    # ------------------------------------------------------------------ accuracy
    def seeds_done(self, epochs: int) -> set[int]:
        """Seeds of this case whose every epoch is recorded already (a run resumed mid-case)."""
        from bench.measure.results import read_records

        me = (self.impl, self.model_name, self.dtype)
        seen: dict[int, set[int]] = {}
        for r in read_records(self.run_dir):
            if r["kind"] == "accuracy" and (r["impl"], r["model"], r["dtype"]) == me:
                seen.setdefault(int(r["seed"]), set()).add(int(r["epoch"]))
        return {s for s, e in seen.items() if len(e) >= epochs}

    def part_accuracy(self) -> list[dict[str, Any]]:
        from bench.check.accuracy import AccuracyBudget, train
        from bench.core.model import build_seeded
        from bench.core.params import init_params
        from bench.plan.inputs import mnist_arrays

        emit(phase="accuracy: loading MNIST")
        data = mnist_arrays(self.run.get("data_dir"), dtype=self.dtype)
        budget = AccuracyBudget.from_profile(self.profile["accuracy"], self.spec)
        done = self.seeds_done(budget.epochs)  # a resumed run: each seed's records are written whole
        for seed in [int(s) for s in self.profile.get("seeds", [0]) if int(s) not in done]:
            params = init_params(self.spec, seed)
            dropout_seed: list[int | None] = []

            def build(p: dict = params, s: int = seed, seen: list = dropout_seed) -> Any:
                model, used = build_seeded(self.module, self.spec, p, self.dtype, s)
                seen.append(used)
                return model

            epochs = train(build, data, self.spec, budget, seed, progress=lambda s: emit(phase=s))
            extra = {"dropout_seed": dropout_seed[0] if dropout_seed else None}
            self.write([self.record("accuracy", validated=self.validated, **_finite_dict(r), **extra) for r in epochs])
        return []


def params_digest(params: dict[str, Any]) -> str:
    """SHA-256 of every parameter's bytes (canonical names, sorted; C order): equal only when the
    parameters are bit-identical."""
    import hashlib

    import numpy as np

    h = hashlib.sha256()
    for name in sorted(params):
        a = np.ascontiguousarray(params[name])  # Model.params(): host arrays
        h.update(name.encode() + str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
    return h.hexdigest()[:16]


def _itemsize(dtype: str) -> int:
    import numpy as np

    return int(np.dtype(dtype).itemsize)


def _finite(v: Any) -> Any:
    """JSON has no inf/nan: store them as strings the report can parse back."""
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return str(v)
    return v


def _finite_dict(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _finite(v) for k, v in d.items()}


# ---------------------------------------------------------------------- commands
