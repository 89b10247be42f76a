"""nnbench harness: one MLP and one CNN, six implementations, one referee."""

__version__ = "0.1.0"
