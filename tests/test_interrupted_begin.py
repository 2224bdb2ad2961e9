"""A Connection whose ``begin`` listener was interrupted or raised cannot begin again.

SQLAlchemy (2.0, 2.1) then neither begins nor commits: a statement runs in the driver's
implicit transaction, ``commit()`` sends nothing and reports success, and the pool's reset
rolls the write back. The store refuses such a Connection before it sends anything
(TransactionStateError), on the driver path and on SQLAlchemy's, sync and async. Each test
fails without the refusal: the append returns a position and nothing is stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.util import await_only

from dcb_store import AsyncEventStore, Event, EventStore, TransactionStateError
from dcb_store._impl import driver
from tests.helpers import count_tagged
from tests.test_driver_path import _async_driver

PATHS = ["driver", "sqlalchemy"]


def _raises_once() -> Callable[[Any], None]:
    """A ``begin`` listener that raises the first time it runs."""
    fail = [True]

    def on_begin(_conn: Any) -> None:
        if fail[0]:
            fail[0] = False
            raise RuntimeError("a listener's error")

    return on_begin


def _listen(engine: Engine, path: str, on_begin: Any) -> None:
    event.listen(engine, "begin", on_begin)
    if path == "sqlalchemy":  # a listener of statements sends them through SQLAlchemy
        event.listen(engine, "before_cursor_execute", lambda *_args: None)


@pytest.mark.parametrize("path", PATHS)
def test_a_begin_listener_that_raised_leaves_a_connection_the_store_refuses(
    fresh_db_url: str, engine: Engine, path: str
) -> None:
    failing = create_engine(fresh_db_url)
    _listen(failing, path, _raises_once())
    with failing.connect() as conn:
        store = EventStore(conn)
        with pytest.raises(RuntimeError):
            store.append(Event("E", {}, ["begin:first"]))
        conn.rollback()  # does not clear it
        assert (driver._driver_connection(conn) is not None) == (path == "driver")
        with pytest.raises(TransactionStateError):
            store.append(Event("E", {}, ["begin:lost"]))
        with pytest.raises(TransactionStateError):
            store.read()
        conn.commit()
    with failing.connect() as conn:  # another Connection: the store works
        EventStore(conn).append(Event("E", {}, ["begin:after"]))
        conn.commit()
    failing.dispose()
    assert count_tagged(engine, "begin:lost") == 0
    assert count_tagged(engine, "begin:after") == 1


@pytest.mark.parametrize("path", PATHS)
def test_a_begin_listener_cancelled_while_it_awaits_leaves_a_connection_the_store_refuses(
    fresh_db_url: str, engine: Engine, path: str
) -> None:
    async def scenario() -> None:
        async_engine = create_async_engine(fresh_db_url)
        slow = [True]

        def on_begin(_conn: Any) -> None:
            if slow[0]:
                await_only(asyncio.sleep(0.5))

        _listen(async_engine.sync_engine, path, on_begin)
        async with async_engine.connect() as conn:
            store = AsyncEventStore(conn)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(store.append(Event("E", {}, ["begin:first"])), 0.1)
            slow[0] = False
            await conn.rollback()
            assert (_async_driver(conn) is not None) == (path == "driver")
            with pytest.raises(TransactionStateError):
                await store.append(Event("E", {}, ["begin:lost"]))
            await conn.commit()
        await async_engine.dispose()

    asyncio.run(scenario())
    assert count_tagged(engine, "begin:lost") == 0


def test_at_autocommit_the_store_still_appends(fresh_db_url: str, engine: Engine) -> None:
    """At AUTOCOMMIT each statement commits on its own: nothing to lose, nothing refused."""
    failing = create_engine(fresh_db_url, isolation_level="AUTOCOMMIT")
    event.listen(failing, "begin", _raises_once())
    with failing.connect() as conn:
        with pytest.raises(RuntimeError):
            EventStore(conn).append(Event("E", {}, ["begin:first"]))
        EventStore(conn).append(Event("E", {}, ["begin:autocommit"]))
    failing.dispose()
    assert count_tagged(engine, "begin:autocommit") == 1
