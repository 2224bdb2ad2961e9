"""``python -m benchmarks``: the same harness as ``dcb-store bench``."""
