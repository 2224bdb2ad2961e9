"""Prometheus metrics (``pip install 'dcb-store[metrics]'``).

``metrics = install_prometheus()`` counts operations by outcome (``ok``, ``conflict``,
``lock_timeout``, ``error``), times them, records how long appends waited for their advisory
locks (``dcb_store_lock_wait_seconds``), and offers ``metrics.held_locks``, a gauge to feed from
a :class:`~dcb_store.monitoring.LockWatcher`:
``LockWatcher(engine, on_count=metrics.held_locks.set)``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from dcb_store.errors import ConcurrencyError, LockTimeoutError
from dcb_store.observing import Hook, add_hook, remove_hook

__all__ = ["PrometheusMetrics", "install_prometheus"]


def outcome_of(error: BaseException | None) -> str:
    """The outcome label of an operation that raised ``error`` (None: it succeeded)."""
    if error is None:
        return "ok"
    if isinstance(error, LockTimeoutError):
        return "lock_timeout"
    return "conflict" if isinstance(error, ConcurrencyError) else "error"


@dataclass
class PrometheusMetrics:
    """The installed collectors, and ``uninstall()``."""

    operations: Any
    seconds: Any
    held_locks: Any
    lock_wait: Any
    hook: Hook

    def uninstall(self) -> None:
        """Stop recording (the collectors stay registered)."""
        remove_hook(self.hook)


def install_prometheus(registry: Any = None, prefix: str = "dcb_store") -> PrometheusMetrics:
    """Register the collectors (in ``registry``, default the global one) and start recording."""
    from prometheus_client import REGISTRY, Counter, Gauge, Histogram

    registry = REGISTRY if registry is None else registry
    operations = Counter(
        f"{prefix}_operations",
        "Store operations by outcome",
        ["operation", "outcome"],
        registry=registry,
    )
    seconds = Histogram(
        f"{prefix}_operation_seconds", "Store operation duration", ["operation"], registry=registry
    )
    held = Gauge(
        f"{prefix}_held_locks", "Advisory locks of dcb_store held or awaited", registry=registry
    )
    lock_wait = Histogram(
        f"{prefix}_lock_wait_seconds",
        "Time appends waited for their advisory locks",
        buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30),
        registry=registry,
    )

    @contextmanager
    def hook(operation: str, attributes: dict[str, Any]) -> Iterator[None]:
        started = time.perf_counter()
        error: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            seconds.labels(operation).observe(time.perf_counter() - started)
            operations.labels(operation, outcome_of(error)).inc()
            if "lock_wait_seconds" in attributes:
                lock_wait.observe(attributes["lock_wait_seconds"])

    add_hook(hook)
    return PrometheusMetrics(operations, seconds, held, lock_wait, hook)
