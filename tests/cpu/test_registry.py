"""The implementation registry and the contract every available backend keeps."""

import pytest

from bench.plan import backends

EXPECTED = {"pure_python", "numpy", "numba", "cupy", "keras", "torch"}


def test_names_and_unknown():
    assert EXPECTED <= set(backends.names())
    with pytest.raises(KeyError, match="valid names: pure_python, numpy"):
        backends.get("tensorflow-js")


def test_available_never_crashes_and_gives_reasons(monkeypatch):
    monkeypatch.setitem(backends._extra, "broken", "no_such_module_xyz")
    avail = backends.available()
    assert set(avail) == set(backends.names())
    ok, reason = avail["broken"]
    assert not ok and "No module named 'no_such_module_xyz'" in reason
    for name, (ok, reason) in avail.items():
        assert isinstance(ok, bool) and reason, name
