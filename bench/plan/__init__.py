"""What a run is: the presets and spec files (``presets``), run profiles (``profile``), the
backends (``backends``: the ``nnbench.implementations`` entry points), the two sides of an A/B
run (``sides``) and MNIST (``data``, ``inputs``)."""
