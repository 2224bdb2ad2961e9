"""The store contract (dcb_store.contract), run on the three stores alike.

PostgreSQL's ``EventStore`` and ``AsyncEventStore`` each run it in a session rolled back after
the test; the async store through ``BlockingStore``, on one event loop per test.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from dcb_store import AsyncEventStore, EventStore
from dcb_store.protocols import AsyncEventStoreLike, EventStoreLike
from dcb_store.testing import (
    BlockingStore,
    InMemoryEventStore,
    StoreContract,
    rolled_back_async_session,
)


class TestEventStore(StoreContract):
    @pytest.fixture
    def store(self, session: Session) -> EventStoreLike:
        return EventStore(session)


class TestAsyncEventStore(StoreContract):
    @pytest.fixture
    def store(self, shared_engine: Engine) -> Iterator[EventStoreLike]:
        with asyncio.Runner() as runner:
            engine = create_async_engine(shared_engine.url)
            rolled_back = rolled_back_async_session(engine)
            session = runner.run(rolled_back.__aenter__())
            try:
                yield BlockingStore(AsyncEventStore(session), runner)
            finally:
                runner.run(rolled_back.__aexit__(None, None, None))
                runner.run(engine.dispose())


class TestInMemoryEventStore(StoreContract):
    @pytest.fixture
    def store(self) -> EventStoreLike:
        return InMemoryEventStore()


def test_every_store_is_its_protocol(session: Session) -> None:
    assert isinstance(EventStore(session), EventStoreLike)
    assert isinstance(InMemoryEventStore(), EventStoreLike)
    assert isinstance(AsyncEventStore.__new__(AsyncEventStore), AsyncEventStoreLike)
