"""Whether the backends compute and learn alike: agreement with the float64 reference tensor by
tensor (``agreement``), training to a test accuracy (``accuracy``), learning curves and their
equivalence over seeds (``recipes``)."""
