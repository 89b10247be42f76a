"""Reports for people: one run's files (``run_report``, ``tables``, ``figures``, ``headline``,
``render``), several runs (``history``, ``side_by_side``, ``recipes``) and the ``report`` command
(``cli``)."""
