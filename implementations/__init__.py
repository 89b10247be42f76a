"""The built-in backends, one subpackage each.

Each is registered in ``pyproject.toml`` under the entry-point group ``nnbench.implementations``
and honours the backend contract of ``bench.core.model`` (docs/backends.md). A backend imports
only ``bench.core`` and its own package, never the rest of the harness.
"""
