"""The store is for PostgreSQL: any other bind is refused at construction, clearly."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from dcb_store import AsyncEventStore, DcbStoreError, EventStore
from dcb_store.errors import UnsupportedDatabaseError


def test_sqlite_session_and_connection_are_refused_at_construction() -> None:
    engine = create_engine("sqlite://")
    with Session(engine) as session, pytest.raises(UnsupportedDatabaseError, match="sqlite"):
        EventStore(session)
    with engine.connect() as conn, pytest.raises(DcbStoreError, match="needs PostgreSQL"):
        EventStore(conn)
    engine.dispose()


def test_postgresql_binds_are_accepted(shared_engine: Engine) -> None:
    with Session(shared_engine) as session:
        assert EventStore(session).read(limit=1).head is not None or not EventStore(session).read()
    EventStore(Session())  # unbound: nothing to check yet

    async def construct() -> None:
        aengine = create_async_engine(shared_engine.url)
        async with AsyncSession(aengine) as asession:
            AsyncEventStore(asession)
        async with aengine.connect() as aconn:
            AsyncEventStore(aconn)
        await aengine.dispose()

    asyncio.run(construct())
