"""The two sides of a same-machine A/B run (``python -m bench run --gate-ref REF``).

Side A is the working tree's code, side B is REF's. In the run's records, B's cases carry the
implementation's name with ``REF_SUFFIX`` (``numpy@ref``), so every part of the harness that
keys on an implementation (run state, records, derived columns, reports) keeps the two apart
with no other change. Code that needs a name's own implementation, or its side's NumPy, reads
it through these functions.
"""

from __future__ import annotations

from typing import Any

REF_SUFFIX = "@ref"


def is_ref(impl: Any) -> bool:
    """Is ``impl`` a side-B (REF) case name?"""
    return isinstance(impl, str) and impl.endswith(REF_SUFFIX)


def ref_name(impl: str) -> str:
    """The side-B name of implementation ``impl``."""
    return impl if is_ref(impl) else impl + REF_SUFFIX


def base_name(impl: str) -> str:
    """The implementation a (possibly side-B) case name measures: ``numpy@ref`` -> ``numpy``."""
    return impl[: -len(REF_SUFFIX)] if is_ref(impl) else impl


def same_side(name: str, impl: Any) -> str:
    """Implementation ``name`` on the side ``impl`` is on (``numpy`` for ``torch@ref``: ``numpy@ref``)."""
    return ref_name(name) if is_ref(impl) else name


def tree_label(tree: dict[str, Any] | None) -> str:
    """Side A of an A/B run in words: the working tree's HEAD and its uncommitted changes."""
    if not tree:
        return "the working tree"
    text = f"the working tree at {str(tree.get('commit'))[:10]}"
    if tree.get("dirty"):
        text += f" with uncommitted changes (diff sha256 {str(tree.get('diff_sha256'))[:12]})"
    return text
