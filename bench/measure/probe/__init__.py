"""Probes outside the benchmark run: a train step broken down by function (``layer_timing``,
``python -m bench layers``), kernel-variant microbenchmarks (``microbench``) and the plain,
framework-idiomatic training loops that the keras and torch backends are held to (``plain``)."""
