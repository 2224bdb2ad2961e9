"""The store's two paths (dcb_store._impl.driver): on the psycopg connection, or through
SQLAlchemy when someone listens to a statement's execution; for the sync and the async store.
Both must keep the caller's transaction rules."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, create_async_engine
from sqlalchemy.orm import Session

from dcb_store import (
    AppendCondition,
    AsyncEventStore,
    ConditionFailedError,
    DatabaseError,
    Event,
    EventStore,
    Query,
)
from dcb_store._impl import driver
from tests.helpers import count_tagged


@pytest.fixture
def plain_engine(fresh_db_url: str) -> Any:
    engine = create_engine(fresh_db_url)
    yield engine
    engine.dispose()


def test_a_first_statement_append_on_a_connection_commits_with_the_callers_commit(
    plain_engine: Engine,
) -> None:
    with plain_engine.connect() as conn:
        assert driver._driver_connection(conn) is not None  # the driver path is taken
        assert not conn.in_transaction()
        EventStore(conn).append(Event("E", {}, ["first:1"]))
        assert conn.in_transaction()
        conn.commit()
    assert count_tagged(plain_engine, "first:1") == 1


def test_a_driver_path_append_rolls_back_with_the_caller(plain_engine: Engine) -> None:
    with plain_engine.connect() as conn:
        EventStore(conn).append(Event("E", {}, ["gone:1"]))
        conn.rollback()
    with Session(plain_engine) as session:
        EventStore(session).append(Event("E", {}, ["gone:2"]))
        session.rollback()
    assert count_tagged(plain_engine, "gone:1") == 0
    assert count_tagged(plain_engine, "gone:2") == 0


def test_listeners_and_echo_see_the_append(plain_engine: Engine) -> None:
    seen: list[str] = []

    @event.listens_for(plain_engine, "before_cursor_execute")
    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    with plain_engine.connect() as conn:
        assert driver._driver_connection(conn) is None  # SQLAlchemy runs it
        EventStore(conn).append(Event("E", {}, ["seen:1"]))
        conn.commit()
    assert any("dcb.append_v5" in s for s in seen)
    assert count_tagged(plain_engine, "seen:1") == 1


def test_a_listener_on_the_connection_alone_sees_the_append(plain_engine: Engine) -> None:
    seen: list[str] = []
    with plain_engine.connect() as conn, plain_engine.connect() as other:
        assert driver._driver_connection(conn) is not None

        @event.listens_for(conn, "after_cursor_execute")
        def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            seen.append(statement)

        assert driver._driver_connection(conn) is None
        assert driver._driver_connection(other) is not None  # the Engine's others: unaffected
        EventStore(conn).append(Event("E", {}, ["seen:2"]))
        conn.commit()
    assert any("dcb.append_v5" in s for s in seen)


def test_outcomes_and_errors_are_the_same_on_both_paths(fresh_db_url: str) -> None:
    for echo in (False, True):  # echo forces the SQLAlchemy path
        engine = create_engine(fresh_db_url, echo=echo)
        tag = f"both:{echo}"
        with engine.connect() as conn:
            store = EventStore(conn)
            first = store.append(Event("E", {}, [tag]))
            with pytest.raises(ConditionFailedError) as failed:
                store.append(Event("E", {}, [tag]), AppendCondition(Query.of(tags=[tag]), 0))
            assert failed.value.position == first
            # the transaction stays usable after a refused append
            assert store.append(Event("E", {}, [tag]), AppendCondition(Query.of(tags=[tag]), first))
            conn.commit()
        assert count_tagged(engine, tag) == 2
        engine.dispose()


def test_reads_return_the_same_events_on_both_paths(fresh_db_url: str) -> None:
    """The driver path reads rows in binary format, SQLAlchemy's in text: same values, types."""
    stored = [
        Event("É", {"n": [1, 2.5, None, True], "s": "ü\\n\"'"}, ["both:r", "ü:1"]),
        Event("F", [], ["both:r"], metadata={"trace": {"id": "x"}}, id=uuid.uuid4()),
        Event("G", "text", ["both:r", "x" * 200]),
        Event("H", 12345678901234567890, ["both:r"], metadata={}),
    ]
    engine = create_engine(fresh_db_url)
    with engine.connect() as conn:
        EventStore(conn).append(stored)
        conn.commit()
    engine.dispose()
    results = []
    for echo in (False, True):  # echo forces the SQLAlchemy path
        engine = create_engine(fresh_db_url, echo=echo)
        with engine.connect() as conn:
            assert (driver._driver_connection(conn) is None) is echo
            store = EventStore(conn)
            read = store.read(Query.of(tags=["both:r"]))
            streamed = list(store.stream(Query.of(tags=["both:r"]), batch_size=2))
        engine.dispose()
        assert read.events == streamed
        assert [e.event for e in read.events] == stored
        results.append(
            [
                (e, [type(v) for v in (*e.event.model_dump().values(), e.recorded_at)])
                for e in read.events
            ]
        )
    assert results[0] == results[1]
    assert results[0][0][0].recorded_at.utcoffset() is not None


@pytest.mark.parametrize("level", ["AUTOCOMMIT", "REPEATABLE READ", "SERIALIZABLE"])
def test_an_engine_with_an_isolation_level_option_takes_the_driver_path_at_its_level(
    plain_engine: Engine, level: str
) -> None:
    """``execution_options(isolation_level=...)`` adds an engine_connect listener, no other:
    the append runs on the driver, in a transaction of the Connection's level."""
    engine = plain_engine.execution_options(isolation_level=level)
    tag = f"level:{level}"
    with engine.connect() as conn:
        assert driver._driver_connection(conn) is not None
        EventStore(conn).append(Event("E", {}, [tag]))
        seen = conn.exec_driver_sql("SELECT current_setting('transaction_isolation')").scalar()
        assert seen == ("read committed" if level == "AUTOCOMMIT" else level.lower())
        conn.commit()
    assert count_tagged(plain_engine, tag) == 1


def test_a_handle_error_listener_sees_a_failed_append(plain_engine: Engine) -> None:
    """A dialect event (handle_error here) sends the append through SQLAlchemy."""
    failed: list[str] = []

    @event.listens_for(plain_engine, "handle_error")
    def record(context: Any) -> None:
        failed.append(context.statement or "")

    with plain_engine.connect() as conn:
        assert driver._driver_connection(conn) is None
        with pytest.raises(DBAPIError):
            conn.exec_driver_sql("SELECT 1 / 0")
        with pytest.raises(DatabaseError):  # the transaction is aborted
            EventStore(conn).append(Event("E", {}, ["failed:1"]))
        conn.rollback()
    assert len(failed) == 2 and "dcb.append_v5" in failed[1]


def test_the_async_store_takes_the_driver_path_inside_the_callers_transaction(
    fresh_db_url: str, plain_engine: Engine
) -> None:
    async def scenario() -> None:
        engine = create_async_engine(fresh_db_url)
        async with engine.connect() as conn:
            assert _async_driver(conn) is not None
            assert not conn.in_transaction()
            store = AsyncEventStore(conn)
            await store.append(Event("E", {}, ["async:gone"]))
            assert conn.in_transaction()  # the autobegin, as execute's
            await conn.rollback()
            await store.append(Event("E", {}, ["async:kept"]))
            await conn.commit()
        async with AsyncSession(engine) as session:
            await AsyncEventStore(session).append(Event("E", {}, ["async:gone"]))
            await session.rollback()
        await engine.dispose()

    asyncio.run(scenario())
    assert count_tagged(plain_engine, "async:gone") == 0
    assert count_tagged(plain_engine, "async:kept") == 1


def test_the_async_store_answers_alike_on_both_paths(fresh_db_url: str) -> None:
    """The same outcomes, errors and events read, on the driver and through SQLAlchemy (where
    a listener sees every statement)."""
    stored = [
        Event("É", {"n": [1, 2.5, None, True], "s": "ü\\n\"'"}, ["both:a", "ü:1"]),
        Event("F", [], ["both:a"], metadata={"trace": {"id": "x"}}, id=uuid.uuid4()),
    ]

    async def scenario(listen: bool) -> list[Any]:
        engine = create_async_engine(fresh_db_url)
        seen: list[str] = []
        if listen:
            event.listen(
                engine.sync_engine,
                "before_cursor_execute",
                lambda _c, _cur, statement, *_a: seen.append(statement),
            )
        tag = f"both:{listen}"
        async with engine.connect() as conn:
            assert (_async_driver(conn) is None) is listen
            store = AsyncEventStore(conn)
            first = await store.append(Event("E", {}, [tag]))
            with pytest.raises(ConditionFailedError) as failed:
                await store.append(Event("E", {}, [tag]), AppendCondition(Query.of(tags=[tag]), 0))
            assert failed.value.position == first
            if not listen:
                await store.append(stored)
            read = await store.read(Query.of(tags=["both:a"]))
            streamed = [e async for e in store.stream(Query.of(tags=["both:a"]), batch_size=1)]
            assert read.events == streamed and await store.head() == read.head
            await conn.commit()
            with pytest.raises(DBAPIError):
                await conn.execute(text("SELECT 1 / 0"))
            with pytest.raises(DatabaseError):  # the transaction is aborted
                await store.append(Event("E", {}, [tag]))
            await conn.rollback()
        await engine.dispose()
        assert any("dcb.append_v5" in s for s in seen) is listen
        return [(e, e.recorded_at.utcoffset()) for e in read.events]

    driver_path, sqlalchemy_path = asyncio.run(scenario(False)), asyncio.run(scenario(True))
    assert [e.event for e, _ in driver_path] == stored
    assert driver_path == sqlalchemy_path


def _async_driver(conn: AsyncConnection) -> Any:
    return driver._driver_connection(conn.sync_connection, psycopg.AsyncConnection)  # type: ignore[arg-type]
