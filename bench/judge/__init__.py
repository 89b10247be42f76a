"""The regression gate: one run against a baseline or its own REF side (``compare``, rules in its
docstring), the speed statistic (``speed``), agreement, crash and accuracy checks (``checks``), the
committed baselines per machine kind and the A/B fallback (``baseline``)."""
