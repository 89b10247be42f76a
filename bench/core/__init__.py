"""What the harness and every backend share, and nothing else: the spec types (``spec``), the
canonical parameters and their checks (``params``), thread settings (``threads``) and the backend
contract with its helpers (``model``). It imports no other part of ``bench`` and no backend
(``tests/cpu/test_import_graph.py``), so a backend package depends on this and nothing more."""
