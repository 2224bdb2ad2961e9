"""What surrounds every append, for the sync and async stores alike.

The observation hooks (metrics, tracing) and the circuit breaker.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dcb_store.breaker import CircuitBreaker
from dcb_store.observing import observed


@contextmanager
def guarded_append(breaker: CircuitBreaker | None, conditional: bool) -> Iterator[dict[str, Any]]:
    """Observe the append; fail fast while the breaker is open, and report the outcome to it.

    Yields the observation attributes: the append adds what it learns (``lock_wait_seconds``).
    """
    info: dict[str, Any] = {"conditional": conditional}
    with observed("append", info):
        trial = breaker.before() if breaker else False
        error: BaseException | None = None
        try:
            yield info
        except BaseException as exc:
            error = exc
            raise
        finally:
            if breaker:
                breaker.after(trial, error)
