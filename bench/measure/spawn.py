"""Launching and watching worker processes (``python -m bench.measure.worker``).

Each worker runs in its own process group, its stderr going to ``<run_dir>/logs/<name>.log``.
Its stdout carries progress lines (``@@nnbench {json}``, ``bench.measure.case.emit``); the current
phase is shown on the run's progress line, refreshed at least every ``HEARTBEAT_S``. A worker
past its timeout has its whole group killed; so has one whose run is interrupted (Ctrl-C,
SIGTERM). ``failure`` says what became of a worker that did not finish: timeout, oom or crash.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.core.threads import BLAS_WAIT_ENV, MALLOC_ENV
from bench.measure.case import MARK
from bench.measure.terminal import Progress

REPO = Path(__file__).resolve().parents[2]
HEARTBEAT_S = 30.0


@dataclass
class WorkerResult:
    returncode: int | None
    timed_out: bool
    last_phase: str
    stderr_tail: str
    events: list[dict[str, Any]] = field(default_factory=list)
    elapsed_s: float = 0.0


def run_worker(
    args: list[str],
    run_dir: Path,
    log_name: str,
    timeout_s: float,
    label: str,
    progress: Progress | None,
    extra_env: dict[str, str] | None = None,
    code: Path | None = None,
) -> WorkerResult:
    """``python -m bench.measure.worker *args`` in its own process group; kill the group on timeout.
    ``code``: the folder the worker starts in, ahead of the repository on its path (side B of an
    A/B run: REF's ``implementations``, ``bench.measure.ref_tree.code_root``); None: the repository."""
    logs = run_dir / "logs"
    logs.mkdir(exist_ok=True)
    log_path = logs / f"{log_name}.log"
    env = dict(os.environ)
    roots = (str(code) if code else "", str(REPO), env.get("PYTHONPATH", ""))
    env["PYTHONPATH"] = os.pathsep.join(p for p in roots if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for key, value in {**MALLOC_ENV, **BLAS_WAIT_ENV}.items():
        env.setdefault(key, value)
    env.update(extra_env or {})
    t0 = time.monotonic()
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bench.measure.worker", *args],
            stdout=subprocess.PIPE,
            stderr=log,
            env=env,
            cwd=str(code or REPO),
            start_new_session=True,
        )
        lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True).start()
        events: list[dict[str, Any]] = []
        other: list[str] = []
        try:
            phase, timed_out = _watch(proc, lines, events, other, label, progress, t0, timeout_s)
        except BaseException:  # Ctrl-C / SIGTERM of the run: take the worker down with us
            _kill_group(proc)
            proc.wait(timeout=10)
            raise
        proc.wait()
        if other:
            log.write(("\n[stdout]\n" + "\n".join(other) + "\n").encode())
    tail = _tail(log_path)
    return WorkerResult(proc.returncode, timed_out, phase, tail, events, time.monotonic() - t0)


def _watch(
    proc: subprocess.Popen[bytes],
    lines: queue.Queue[str | None],
    events: list[dict[str, Any]],
    other: list[str],
    label: str,
    progress: Progress | None,
    t0: float,
    timeout_s: float,
) -> tuple[str, bool]:
    """Follow the worker's progress lines until it exits or runs out of time: (last phase, timed out)."""
    phase, eof, shown = "start", False, 0.0
    if progress:
        progress.show(label, phase, 0.0)
    while not (eof and proc.poll() is not None):
        elapsed = time.monotonic() - t0
        if elapsed > timeout_s:
            _kill_group(proc)
            return phase, True
        try:
            line = lines.get(timeout=min(1.0, max(0.05, timeout_s - elapsed)))
        except queue.Empty:
            line = ""
        if line is None:
            eof = True
        elif line.startswith(MARK):
            try:
                ev = json.loads(line[len(MARK) :])
            except json.JSONDecodeError:
                ev = {}
            events.append(ev)
            if "phase" in ev:
                phase, shown = ev["phase"], -HEARTBEAT_S  # show a new phase at once
        elif line:
            other.append(line)
        now = time.monotonic() - t0
        if progress and now - shown >= HEARTBEAT_S:
            progress.show(label, phase, now)
            shown = now
    return phase, False


def _pump(stream: Any, q: queue.Queue[str | None]) -> None:
    for raw in iter(stream.readline, b""):
        q.put(raw.decode("utf-8", "replace").rstrip("\n"))
    q.put(None)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _tail(path: Path, n: int = 3000) -> str:
    try:
        data = path.read_bytes()
    except OSError:
        return ""
    return data[-n:].decode("utf-8", "replace")


def failure(res: WorkerResult, timeout_s: float) -> tuple[str, str]:
    """(status, error text) for a worker that did not finish its parts."""
    where = f"during {res.last_phase!r}"
    if res.timed_out:
        return "timeout", f"no result after {timeout_s:.0f} s (timeout) {where}\n{res.stderr_tail}"
    rc = res.returncode
    if rc is not None and rc < 0:
        sig = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else str(-rc)
        if rc == -signal.SIGKILL:
            return "oom", f"killed by {sig} {where} (most likely the kernel's out-of-memory killer)\n{res.stderr_tail}"
        return "crash", f"killed by signal {sig} {where}\n{res.stderr_tail}"
    if "MemoryError" in res.stderr_tail:
        return "oom", f"MemoryError {where}, exit code {rc}\n{res.stderr_tail}"
    return "crash", f"exit code {rc} {where}\n{res.stderr_tail}"
