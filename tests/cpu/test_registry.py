"""The implementation registry and the contract every available backend keeps."""

import pytest

import implementations

EXPECTED = {"pure_python", "numpy", "numba", "cupy", "keras", "torch"}


def test_names_and_unknown():
    assert EXPECTED <= set(implementations.names())
    with pytest.raises(KeyError, match="valid names: pure_python, numpy"):
        implementations.get("tensorflow-js")


def test_available_never_crashes_and_gives_reasons(monkeypatch):
    monkeypatch.setitem(implementations._REGISTRY, "broken", "no_such_module_xyz")
    avail = implementations.available()
    assert set(avail) == set(implementations.names())
    ok, reason = avail["broken"]
    assert not ok and "No module named 'no_such_module_xyz'" in reason
    for name, (ok, reason) in avail.items():
        assert isinstance(ok, bool) and reason, name
