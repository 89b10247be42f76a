"""How fast, and how far the figures can be trusted: worker processes (``spawn``, ``worker``, one
case in a worker: ``case``; ``run_cases``, ``run_state``), the timer (``timing``), the records
(``results``, ``derived``, ``frames``), the machine (``envinfo``), stability flags (``stability``),
the progress line (``terminal``), injected slowdowns for gate drills (``inject``), REF's code for
an A/B run (``ref_tree``), and probes outside the run (``probe``: per-layer and kernel timings,
the plain framework loops)."""
