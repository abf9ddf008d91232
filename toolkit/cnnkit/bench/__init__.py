"""Benchmarking: timing, defaults, tuning, profiles, memory, concurrency, recommendation."""
