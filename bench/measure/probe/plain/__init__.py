"""Plain framework scripts (no harness) and the harness-vs-plain comparison.

``torch_step.py`` and ``keras_step.py`` are standalone: each writes the preset model by
hand and times its training step with its own tutorial loop. ``compare.py`` times a
harness-built model's ``train_step`` against the plain step in one process with the run's
timer (``bench.measure.timing.Timer``), alternating rounds, so machine noise hits both alike.
"""
