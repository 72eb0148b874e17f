"""Benchmarks: figures, never assertions (see bench/runner_overhead.py)."""
