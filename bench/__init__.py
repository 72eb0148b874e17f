"""Benchmarks of station against OpenHTF and its budgets: figures, never assertions.

Run `python -m bench` (see bench/__main__.py); this package imports nothing on purpose, so the
subprocesses it starts load only what they measure.
"""
