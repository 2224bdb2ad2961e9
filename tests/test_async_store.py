"""The async store on real PostgreSQL, natively awaited.

The contract's scenarios run on it in ``tests/test_contract.py`` (through ``BlockingStore``);
this test awaits it directly: an ``async for`` stream, the locks its transaction holds, a commit.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

from dcb_store import AppendCondition, AsyncEventStore, Event, InvalidInputError, Query


def test_async_store_awaited_in_its_own_transaction(fresh_db_url: str) -> None:
    async def scenario() -> None:
        engine = create_async_engine(fresh_db_url)
        async with AsyncSession(engine) as session:
            store = AsyncEventStore(session)
            head = (await store.read(Query.of(tags=["a:1"]))).head
            pos = await store.append(
                Event("A", tags=["a:1"]), AppendCondition(Query.of(tags=["a:1"]), head)
            )
            assert [e.position async for e in store.stream(batch_size=1)] == [pos]
            assert await store.head() == pos and await store.lock_count() > 0
            assert len(await store.lock_stats()) == await store.lock_count()
            await session.commit()
            with pytest.raises(InvalidInputError):
                await store.append([])
        async with AsyncSession(engine) as session:
            assert (await AsyncEventStore(session).read()).head == pos
        await engine.dispose()

    asyncio.run(scenario())
