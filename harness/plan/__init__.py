"""What a run is asked to do, known before anything boots: its options (options.py) and
its targets (targets.py).  Neither pytest nor a Machine is imported here, so that the
CLI, the pytest plugin and the result tools share one declaration."""
