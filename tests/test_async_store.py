"""The async store on real PostgreSQL: the same contract as the sync store."""

from __future__ import annotations

import pytest

from dcb_store import AppendCondition, ConditionFailedError, Event, InvalidInputError, Query


def test_async_store_shares_the_contract(fresh_db_url: str) -> None:
    import asyncio

    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    from dcb_store import AsyncEventStore, Projection

    async def scenario() -> None:
        engine = create_async_engine(fresh_db_url)
        async with AsyncSession(engine) as session:
            store = AsyncEventStore(session)
            head = (await store.read(Query.of(tags=["a:1"]))).head
            pos = await store.append(
                Event("A", tags=["a:1"]), AppendCondition(Query.of(tags=["a:1"]), head)
            )
            with pytest.raises(ConditionFailedError):
                await store.append(
                    Event("A", tags=["a:1"]), AppendCondition(Query.of(tags=["a:1"]), head)
                )
            assert [e.position async for e in store.stream(batch_size=1)] == [pos]
            counter = Projection(Query.of(tags=["a:1"]), 0, lambda n, _e: n + 1)
            (n,), cond = await store.project([counter])
            assert (
                n == 1 and cond.after == pos and cond.fail_if_events_match == Query.of(tags=["a:1"])
            )
            assert await store.head() == pos and await store.lock_count() > 0
            assert len(await store.lock_stats()) == await store.lock_count()
            await session.commit()
            with pytest.raises(InvalidInputError):
                await store.append([])
        await engine.dispose()

    asyncio.run(scenario())
