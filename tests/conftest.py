import os
import sys
from pathlib import Path

import pytest

# tests/cpu holds shared test helpers (oracle_torch.py); make them importable.
sys.path.insert(0, str(Path(__file__).parent / "cpu"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(autouse=True)
def _environment_restored():
    """Each test leaves os.environ as it found it. ``bench.run.main`` run in-process (test_run)
    applies its thread count to the environment (NUMBA_NUM_THREADS=1 among others); left there,
    the next Numba compile in this process re-reads it and refuses, the pool having started
    with 2 ("Cannot set NUMBA_NUM_THREADS to a different value once the threads have been
    launched"), and every later test ran at that run's thread count, not tox's."""
    before = dict(os.environ)
    yield
    if os.environ != before:
        os.environ.clear()
        os.environ.update(before)
