"""Run a unit of work in a fresh transaction, again when it loses a race.

``run_in_transaction(engine, work)`` opens a Session, calls ``work(session)``, commits, and on a
retryable failure (any :class:`ConcurrencyError`, or a serialization failure or deadlock that
PostgreSQL reports at COMMIT) rolls back, sleeps a jittered, capped, exponential backoff and
tries again. ``run_in_transaction_async`` does the same with an AsyncSession.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from dcb_store.errors import ConcurrencyError, DeadlockError, SerializationConflictError

__all__ = ["RetryPolicy", "run_in_transaction", "run_in_transaction_async"]

T = TypeVar("T")

_RETRYABLE_SQLSTATES = {SerializationConflictError.sqlstate, DeadlockError.sqlstate}


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry: full-jitter exponential backoff with a cap."""

    attempts: int = 10
    base_delay: float = 0.005
    max_delay: float = 0.5

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError("attempts >= 1 and 0 <= base_delay <= max_delay")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based)."""
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))

    @staticmethod
    def retryable(exc: BaseException) -> bool:
        """Whether ``exc`` means "lost a race; the same work may succeed in a new transaction"."""
        if isinstance(exc, ConcurrencyError):
            return True
        return (
            isinstance(exc, DBAPIError)
            and getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES
        )


def run_in_transaction(
    engine: Engine, work: Callable[[Session], T], policy: RetryPolicy | None = None
) -> T:
    """Run ``work(session)`` and commit; retry on a lost race. Returns what ``work`` returns."""
    policy = policy or RetryPolicy()
    for attempt in range(policy.attempts):
        with Session(engine) as session:
            try:
                result = work(session)
                session.commit()
                return result
            except Exception as exc:
                session.rollback()
                if not policy.retryable(exc) or attempt == policy.attempts - 1:
                    raise
        time.sleep(policy.delay(attempt))
    raise AssertionError("unreachable")  # pragma: no cover


async def run_in_transaction_async(
    engine: AsyncEngine,
    work: Callable[[AsyncSession], Awaitable[T]],
    policy: RetryPolicy | None = None,
) -> T:
    """The async twin of :func:`run_in_transaction`."""
    policy = policy or RetryPolicy()
    for attempt in range(policy.attempts):
        async with AsyncSession(engine) as session:
            try:
                result = await work(session)
                await session.commit()
                return result
            except Exception as exc:
                await session.rollback()
                if not policy.retryable(exc) or attempt == policy.attempts - 1:
                    raise
        await asyncio.sleep(policy.delay(attempt))
    raise AssertionError("unreachable")  # pragma: no cover
