"""The peer comparison: the same workloads through the ``eventsourcing`` library's DCB recorder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["measure_peer"]


def measure_peer(
    url: str, conns: list[int], duration: float, n_events: int, log: Callable[[str], None]
) -> list[Any]:
    """Rows for the peer library, or none (with a note) when it is not installed."""
    try:
        import eventsourcing  # noqa: F401
    except ImportError:
        log("peer: the eventsourcing package is not installed; skipped (pip install eventsourcing)")
        return []
    log("peer: eventsourcing is installed, but its DCB recorder is not wired into this harness yet")
    return []
