"""The results schema: one tidy record per measurement, appended as JSON lines.

A run directory ``reports/<run_id>/`` holds ``run.json`` (run metadata and environment)
and ``results.jsonl`` (records appended and fsync'ed as each case finishes, so an
interrupted run loses nothing). Every record has the ``COMMON`` columns plus those of its
``kind`` (``KIND_COLUMNS``); absent columns read back as missing values.

Bump ``SCHEMA_VERSION`` when a column changes meaning or name; readers refuse newer versions
and bring older records up to date as they read them (``upgrade_record``). Versions:

1. the first.
2. speed: ``speedup_vs_pure_python`` (against pure Python at the same batch when it measured it,
   else at its best batch) is replaced by ``x_vs_pure_python_b1``: per-sample throughput at the
   case's batch against pure Python's at batch 1, always (``bench.measure.derived``). A version-1 record
   loses the old column and the loader computes the new one from the run's medians. The tidy
   tables (``bench.measure.frames``, Parquet, CSV) name run.json's machine description ``env.<key>`` and
   its other keys ``run.<key>`` (version 1: ``env.env.<key>`` and ``env.<key>``); they are made
   from run.json when a run is loaded, so older runs read with the new names.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 2
RUN_FILE = "run.json"
RESULTS_FILE = "results.jsonl"

COMMON = ("schema_version", "run_id", "kind", "impl", "model", "dtype")

KIND_COLUMNS: dict[str, tuple[str, ...]] = {
    # can the implementation run here, and if not, why
    "availability": ("available", "reason", "requires"),
    # one row per setting that changes numbers (threads, device, oneDNN/TF32, versions, ...)
    "setting": ("key", "value"),
    # one row per compared tensor; phase: forward | loss | grad | params | activation
    "agreement": ("tensor", "phase", "max_abs", "max_rel", "tol", "ok", "first_divergent_layer", "detail"),
    # one row per (phase, batch_size); phase: forward | loss_and_grads | train_step
    "speed": (
        "phase",
        "batch_size",
        "rounds",
        "median_s",
        "iqr_s",
        "mean_s",
        "min_s",
        "samples_s",
        "samples_per_s",
        "gflops",  # the FLOPs the implementation performs (Model.flops), per second
        "frac_peak",
        "gflops_model",  # the model's direct FLOP count (spec.flops) per second: an effective rate
        "frac_peak_model",
        "bytes",  # the phase's compulsory memory traffic (spec.traffic) at the case's dtype and batch
        "working_set_bytes",  # the distinct bytes the phase touches: picks the memory level of its roof
        "limit_s",  # the roofline's bound: max(model FLOPs / GEMM peak, bytes / bandwidth) (bench.measure.derived)
        "bound",  # which term binds: "compute" or "memory (L2 | LLC | DRAM)"
        "x_of_limit",  # limit_s / median_s: 1 = at the machine's limit; > 1 = less work than the model's count
        "speedup_vs_numpy",
        "x_vs_pure_python_b1",  # per-sample throughput at this batch over pure Python's at batch 1
        "validated",
        "iterations",
        "warmup_rounds",
        "process",  # which of the case's P worker processes (0-based) measured this row
        "loadavg",  # 1-minute load average right after the timed rounds
    ),
    # JIT/graph compilation, apart from steady state; phase "build" is model construction
    "compile": ("phase", "cold_s", "warm_cache_s", "steady_s", "batch_size"),
    # one row per (seed, epoch)
    "accuracy": (
        "seed",
        "epoch",
        "train_samples",
        "steps",
        "test_acc",
        "test_loss",
        "train_loss",
        "epoch_s",
        "extrapolated_epoch_s",
        "target_acc",
        "time_to_target_s",
        "validated",
        # added for the regression gate: size of the evaluated test set (binomial band)
        "test_samples",
        "batch_size",  # training batch size (run helper)
        "dropout_seed",  # the seed the backend's dropout masks were drawn with (None: not seedable)
        "optimizer",  # the spec's optimizer (sgd | adam)
        "init",  # the spec's kernel initialiser
    ),
    # this machine's measured peak: a large GEMM in each of the run's dtypes, timed in the same
    # run before ("when": "before") and after ("after") the cases; gflops from the best round,
    # gflops_median from the median; samples_s: raw per-round times (gate)
    "peak": ("gemm_n", "gflops", "median_s", "samples_s", "when", "gflops_median"),
    # this machine's memory bandwidth, STREAM-style (bench.measure.probe.stream): one row per
    # (level, kernel, threads), before and after the cases like the peak; gbps from the best round
    "bandwidth": (
        "level",  # L2 | LLC | DRAM: the memory level the working set was sized for
        "kernel",  # copy | triad
        "threads",
        "ws_bytes",  # bytes the kernel's arrays span together
        "cache_bytes",  # the level's size the working set was taken from (None for DRAM)
        "cache_source",  # sysfs | sysconf | assumed
        "gbps",
        "gbps_median",
        "samples_s",
        "when",
    ),
    # a speed process's parameters after ``steps`` training steps from the same parameters, batch and
    # dropout seed (bench.measure.case.DETERMINISM_STEPS): equal digests = bit-identical
    "determinism": ("steps", "batch_size", "digest", "process"),
    # a case that did not produce figures; status: skipped | crash | timeout | oom | not_implemented | disagrees
    "error": ("phase", "status", "error"),
}


class SchemaError(ValueError):
    """A results file this version cannot read (newer schema, missing or malformed)."""


def make_record(kind: str, **fields: Any) -> dict[str, Any]:
    if kind not in KIND_COLUMNS:
        raise ValueError(f"unknown record kind {kind!r}")
    allowed = set(COMMON) | set(KIND_COLUMNS[kind])
    unknown = set(fields) - allowed
    if unknown:
        raise ValueError(f"{kind} record: unknown columns {sorted(unknown)}")
    return {"schema_version": SCHEMA_VERSION, "kind": kind, **fields}


def append_records(run_dir: str | Path, records: list[dict[str, Any]]) -> None:
    """Append and fsync: what was written survives a crash of the run."""
    path = Path(run_dir) / RESULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, default=_jsonable) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """All records of a run; a torn last line (crash mid-write) is dropped, anything else
    malformed or from a newer schema raises ``SchemaError``."""
    path = Path(run_dir) / RESULTS_FILE
    if not path.is_file():
        raise SchemaError(f"no results file at {path}")
    lines = path.read_text(encoding="utf-8").splitlines()
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            if n == len(lines):
                break  # torn final write
            raise SchemaError(f"{path}:{n}: not JSON: {e}") from e
        check_version(rec.get("schema_version"), f"{path}:{n}")
        out.append(upgrade_record(rec))
    return out


def upgrade_record(rec: dict[str, Any]) -> dict[str, Any]:
    """An older record in the current shape (its ``schema_version`` says what it was written as)."""
    if rec.get("schema_version", SCHEMA_VERSION) < 2:
        # its meaning changed with its name: recomputed from the medians (bench.measure.derived)
        rec.pop("speedup_vs_pure_python", None)
    return rec


def check_version(version: Any, where: str) -> None:
    if not isinstance(version, int):
        raise SchemaError(f"{where}: missing or invalid schema_version {version!r}")
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"{where}: written by a newer nnbench (schema {version}); this one reads up to {SCHEMA_VERSION}"
        )


def _jsonable(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    return str(o)


CASE_FAILURES = ("crash", "timeout", "oom")  # error statuses of a case that did not finish
EXIT_CASES_FAILED = 3  # ``run``'s exit code when the run finished but a case is in CASE_FAILURES


def failed_cases(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``error`` records of parts that crashed, timed out or ran out of memory, once each."""
    seen, out = set(), []
    for r in records:
        key = (r.get("impl"), r.get("model"), r.get("dtype"), r.get("phase"), r.get("status"))
        if r.get("kind") == "error" and r.get("status") in CASE_FAILURES and key not in seen:
            seen.add(key)
            out.append(r)
    return out
