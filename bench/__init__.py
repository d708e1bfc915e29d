"""Benchmarks: run as `python -m bench.<name>`; they print tables and one JSON line each, never assert timings."""
