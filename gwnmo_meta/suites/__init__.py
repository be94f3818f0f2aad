"""Benchmark suites: the step-size grid suites (``grid``: quick, main, transfer) and the protocol
suite (``protocol``: tuned grids, seeds, paired CIs)."""
