"""The retry helper on real races: every decider eventually decides, nothing overflows."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from dcb_store import (
    AppendCondition,
    AsyncEventStore,
    ConditionFailedError,
    Event,
    EventStore,
    Query,
    RetryPolicy,
    run_in_transaction,
    run_in_transaction_async,
)

QUERY = Query.of(tags=["counter:1"])


def bump(session: Session) -> int:
    store = EventStore(session)
    seen = store.read(QUERY)
    store.append(
        Event("Bumped", {"n": len(seen) + 1}, ["counter:1"]), AppendCondition(QUERY, seen.head)
    )
    return len(seen) + 1


def test_racing_deciders_all_succeed_with_retries(engine: Engine) -> None:
    results: list[int] = []
    barrier = threading.Barrier(8)

    def decider() -> None:
        barrier.wait()
        results.append(run_in_transaction(engine, bump, RetryPolicy(attempts=50)))

    threads = [threading.Thread(target=decider) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == list(range(1, 9))  # each saw exactly the ones before it
    with Session(engine) as s:
        assert [e.data["n"] for e in EventStore(s).read(QUERY)] == list(range(1, 9))


def test_gives_up_after_the_last_attempt_and_does_not_retry_other_errors(engine: Engine) -> None:
    calls = 0

    def always_conflicts(session: Session) -> None:
        nonlocal calls
        calls += 1
        EventStore(session).append(Event("X", tags=["k:1"]))
        EventStore(session).append(
            Event("X", tags=["k:1"]), AppendCondition(Query.of(tags=["k:1"]))
        )

    with pytest.raises(ConditionFailedError):
        run_in_transaction(engine, always_conflicts, RetryPolicy(attempts=3, base_delay=0))
    assert calls == 3
    with pytest.raises(ZeroDivisionError):
        run_in_transaction(engine, lambda s: 1 / 0)
    with Session(engine) as s:
        assert len(EventStore(s).read()) == 0  # every attempt was rolled back


def test_async_retries(fresh_db_url: str) -> None:
    async def scenario() -> list[int]:
        engine = create_async_engine(fresh_db_url, pool_size=10)

        async def abump(session: AsyncSession) -> int:
            store = AsyncEventStore(session)
            seen = await store.read(QUERY)
            await store.append(
                Event("Bumped", {}, ["counter:1"]), AppendCondition(QUERY, seen.head)
            )
            return len(seen) + 1

        results = await asyncio.gather(
            *(run_in_transaction_async(engine, abump, RetryPolicy(attempts=50)) for _ in range(6))
        )
        await engine.dispose()
        return sorted(results)

    assert asyncio.run(scenario()) == list(range(1, 7))
