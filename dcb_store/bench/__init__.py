"""Benchmarks: the harness behind `dcb-store bench`."""
