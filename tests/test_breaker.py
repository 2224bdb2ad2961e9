"""The circuit breaker against real lock contention."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from dcb_store import CircuitBreaker, CircuitOpenError, Event, EventStore, LockTimeoutError


def contended_append(engine: Engine, breaker: CircuitBreaker, timeout: float = 0.1) -> None:
    with Session(engine) as s:
        EventStore(s, lock_timeout=timeout, breaker=breaker).append(Event("X", tags=["lock:hot:1"]))
        s.commit()


def test_opens_after_lock_timeouts_fails_fast_then_half_opens(engine: Engine) -> None:
    breaker = CircuitBreaker(failure_threshold=2, cool_down=0.6)
    holder = Session(engine)
    EventStore(holder).append(Event("Hold", tags=["lock:hot:1"]))
    for _ in range(2):
        with pytest.raises(LockTimeoutError):
            contended_append(engine, breaker)
    assert breaker.state == "open"
    started = time.monotonic()
    with pytest.raises(CircuitOpenError) as info:
        contended_append(engine, breaker, timeout=5)
    assert time.monotonic() - started < 0.05 and 0 < info.value.retry_after <= 0.6  # fast
    time.sleep(0.65)
    assert breaker.state == "half-open"
    with pytest.raises(LockTimeoutError):  # the trial still meets the lock: open again
        contended_append(engine, breaker)
    assert breaker.state == "open"
    holder.commit()
    holder.close()
    time.sleep(0.65)
    contended_append(engine, breaker)  # the trial succeeds: closed
    assert breaker.state == "closed"
    contended_append(engine, breaker)


def test_half_open_lets_exactly_one_trial_through_concurrent_callers(engine: Engine) -> None:
    breaker = CircuitBreaker(failure_threshold=1, cool_down=0.2)
    holder = Session(engine)
    EventStore(holder).append(Event("Hold", tags=["lock:hot:1"]))
    with pytest.raises(LockTimeoutError):
        contended_append(engine, breaker)
    time.sleep(0.25)
    outcomes: list[str] = []
    barrier = threading.Barrier(8)

    def caller() -> None:
        barrier.wait()
        try:
            contended_append(engine, breaker, timeout=0.5)
            outcomes.append("ok")
        except CircuitOpenError:
            outcomes.append("fast")
        except LockTimeoutError:
            outcomes.append("trial timed out")

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["fast"] * 7 + ["trial timed out"]
    holder.rollback()
    holder.close()
