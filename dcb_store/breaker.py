"""A circuit breaker for lock timeouts.

After ``failure_threshold`` consecutive lock timeouts the circuit opens: appends fail fast with
:class:`CircuitOpenError` (without touching the database) for ``cool_down`` seconds. Then it is
half-open: exactly one append is let through as a trial; its success closes the circuit, another
lock timeout opens it again. Share one breaker between the stores of a process (it is
thread-safe, and asyncio-safe: its lock is never held across an await).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from dcb_store.errors import CircuitOpenError, ConditionFailedError, LockTimeoutError

__all__ = ["CircuitBreaker", "CircuitOpenError"]  # CircuitOpenError lives in dcb_store.errors


class CircuitBreaker:
    """Closed, open (fail fast) or half-open (one trial), driven by lock timeouts only."""

    def __init__(
        self,
        failure_threshold: int = 5,
        cool_down: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1 or cool_down < 0:
            raise ValueError("failure_threshold >= 1 and cool_down >= 0")
        self.failure_threshold = failure_threshold
        self.cool_down = cool_down
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def state(self) -> str:
        """'closed', 'open' or 'half-open'."""
        with self._lock:
            if self._opened_at is None:
                return "closed"
            return "open" if self._clock() - self._opened_at < self.cool_down else "half-open"

    def before(self) -> bool:
        """Call before an append: raises CircuitOpenError, or returns whether this is the trial."""
        with self._lock:
            if self._opened_at is None:
                return False
            waited = self._clock() - self._opened_at
            if waited < self.cool_down or self._trial_running:
                raise CircuitOpenError(max(0.0, self.cool_down - waited))
            self._trial_running = True
            return True

    def after(self, trial: bool, error: BaseException | None) -> None:
        """Call after the append with the error it raised (None on success)."""
        with self._lock:
            if trial:
                self._trial_running = False
            if isinstance(error, LockTimeoutError):
                self._failures += 1
                if trial or self._failures >= self.failure_threshold:
                    self._opened_at = self._clock()
            elif error is None or isinstance(error, ConditionFailedError):
                # the locks were granted: the contention that opened the circuit is over
                self._failures = 0
                self._opened_at = None
