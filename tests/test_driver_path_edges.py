"""What ``Connection.execute`` refuses or does around a statement, the driver path does too:
inactive transactions, hidden parameters, lost and interrupted connections, reconnection.

Each case differed once (found by review); each test fails without the driver path's answer.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import DBAPIError, InvalidRequestError, PendingRollbackError
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.util import await_only

from dcb_store import AsyncEventStore, Event, EventStore, SchemaMissingError
from dcb_store._impl import driver
from dcb_store.errors import ConnectionLostError
from tests.helpers import count_tagged
from tests.test_driver_path import _async_driver


def test_a_savepoint_rolled_back_in_its_block_refuses_the_append(engine: Engine) -> None:
    with engine.connect() as conn:
        assert driver._driver_connection(conn) is not None
        with pytest.raises(InvalidRequestError), conn.begin_nested() as savepoint:
            savepoint.rollback()
            EventStore(conn).append(Event("E", {}, ["refused:1"]))
        conn.commit()
    assert count_tagged(engine, "refused:1") == 0


@pytest.mark.parametrize("run_async", [False, True])
def test_a_failed_commit_asks_for_a_rollback_before_the_append(
    fresh_db_url: str, engine: Engine, run_async: bool
) -> None:
    deferred = (
        "CREATE TEMP TABLE once (x integer UNIQUE DEFERRABLE INITIALLY DEFERRED); "
        "INSERT INTO once VALUES (1), (1)"
    )
    if not run_async:
        with engine.connect() as conn:
            conn.exec_driver_sql(deferred)
            with pytest.raises(DBAPIError):
                conn.commit()  # the deferred check fails: the transaction is inactive
            with pytest.raises(PendingRollbackError):
                EventStore(conn).append(Event("E", {}, ["pending:1"]))
            conn.rollback()
            EventStore(conn).append(Event("E", {}, ["pending:1"]))
            conn.commit()
        assert count_tagged(engine, "pending:1") == 1
        return

    async def scenario() -> None:
        async_engine = create_async_engine(fresh_db_url)
        async with async_engine.connect() as conn:
            await conn.exec_driver_sql(deferred)
            with pytest.raises(DBAPIError):
                await conn.commit()
            with pytest.raises(PendingRollbackError):
                await AsyncEventStore(conn).append(Event("E", {}, ["pending:2"]))
            await conn.rollback()
        await async_engine.dispose()

    asyncio.run(scenario())


def test_hidden_parameters_stay_hidden_in_the_error_chain(fresh_db_url: str) -> None:
    engine = create_engine(fresh_db_url, hide_parameters=True)
    with engine.connect() as conn:
        assert driver._driver_connection(conn) is not None
        with pytest.raises(SchemaMissingError) as missing:
            EventStore(conn, schema="nope").append(Event("E", {"password": "hunter2"}, ["p:1"]))
        conn.rollback()
    engine.dispose()
    chain = f"{missing.value} {missing.value.__cause__!r} {missing.value.__cause__}"
    assert "hidden" in chain and "hunter2" not in chain


@pytest.mark.parametrize("run_async", [False, True])
def test_a_lost_connection_invalidates_the_pool_it_came_from(
    fresh_db_url: str, engine: Engine, run_async: bool
) -> None:
    """The pool's other connections predate the loss: they reconnect instead of failing one by
    one, as after a statement of SQLAlchemy's own."""
    name = f"dcb-pool-{uuid.uuid4().hex[:6]}"
    options = {"connect_args": {"options": f"-c application_name={name}"}, "pool_size": 3}

    def kill() -> None:
        with engine.connect() as conn:
            conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = :n"
                ),
                {"n": name},
            )

    if not run_async:
        named = create_engine(fresh_db_url, **options)
        held = [named.connect() for _ in range(3)]
        for conn in held:
            conn.exec_driver_sql("SELECT 1")
            conn.close()
        kill()
        with named.connect() as conn, pytest.raises(ConnectionLostError):
            EventStore(conn).read()
        for _ in range(2):
            with named.connect() as conn:
                assert conn.exec_driver_sql("SELECT 1").scalar() == 1
        named.dispose()
        return

    async def scenario() -> None:
        named = create_async_engine(fresh_db_url, **options)
        held = [await named.connect() for _ in range(3)]
        for conn in held:
            await conn.exec_driver_sql("SELECT 1")
            await conn.close()
        kill()
        async with named.connect() as conn:
            with pytest.raises(ConnectionLostError):
                await AsyncEventStore(conn).read()
        for _ in range(2):
            async with named.connect() as conn:
                assert (await conn.exec_driver_sql("SELECT 1")).scalar() == 1
        await named.dispose()

    asyncio.run(scenario())


class _Interrupted(BaseException):
    """Raised by a signal handler, as KeyboardInterrupt would be."""


@pytest.fixture
def alarm() -> Iterator[Callable[[float], object]]:
    """Arms SIGALRM to raise :class:`_Interrupted` in the test after so many seconds."""
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals reach the main thread only")

    def interrupt(*_args: Any) -> None:
        raise _Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        yield lambda seconds: signal.setitimer(signal.ITIMER_REAL, seconds)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def held_key(engine: Engine) -> Iterator[str]:
    """A key held exclusively (a ``lock:`` tag) by a transaction that does not end."""
    key = f"held:{uuid.uuid4().hex[:8]}"
    with engine.connect() as holder:
        EventStore(holder).append(Event("E", {}, [f"lock:{key}"]))
        yield key
        holder.rollback()


def test_an_interrupted_append_leaves_a_transaction_that_must_be_rolled_back(
    engine: Engine, held_key: str, alarm: Callable[[float], object]
) -> None:
    """As after an interrupted Connection.execute: the connection is invalidated, the append
    never commits with the caller's next commit, and after a rollback the connection works."""
    seen = _pids_seen_on_invalidation(engine)
    with engine.connect() as conn:
        assert driver._driver_connection(conn) is not None
        alarm(0.3)
        with pytest.raises(_Interrupted):  # the interruption itself, not a listener's error
            EventStore(conn, lock_timeout=None).append(Event("E", {}, [held_key]))
        assert conn.invalidated and seen and seen[0] > 0
        with pytest.raises(PendingRollbackError):
            conn.commit()
        conn.rollback()
        EventStore(conn).append(Event("E", {}, [f"{held_key}:after"]))
        conn.commit()
    assert count_tagged(engine, f"{held_key}:after") == 1


def test_a_cancelled_async_append_leaves_a_transaction_that_must_be_rolled_back(
    fresh_db_url: str, engine: Engine, held_key: str
) -> None:
    async def scenario() -> None:
        async_engine = create_async_engine(fresh_db_url)
        seen = _pids_seen_on_invalidation(async_engine.sync_engine)
        async with async_engine.connect() as conn:
            assert _async_driver(conn) is not None
            store = AsyncEventStore(conn, lock_timeout=None)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(store.append(Event("E", {}, [held_key])), 0.3)
            assert conn.invalidated and seen and seen[0] > 0
            with pytest.raises(PendingRollbackError):
                await conn.commit()
            await conn.rollback()
            await store.append(Event("E", {}, [f"{held_key}:after"]))
            await conn.commit()
        await async_engine.dispose()

    asyncio.run(scenario())
    assert count_tagged(engine, f"{held_key}:after") == 1


@pytest.mark.parametrize("call", ["read", "head", "stream"])
def test_a_cancelled_async_read_leaves_a_transaction_that_must_be_rolled_back(
    fresh_db_url: str, engine: Engine, call: str
) -> None:
    """A read cancelled while the server works (here: waits for a table lock) leaves the
    caller's transaction in an unknown state, as an append does: what the caller wrote before
    it must not commit."""
    table = f"scratch_{uuid.uuid4().hex[:8]}"
    with engine.begin() as setup:
        setup.execute(text(f"CREATE TABLE {table} (x int)"))

    async def scenario(store_reads: Callable[[AsyncEventStore], Any]) -> None:
        async_engine = create_async_engine(fresh_db_url)
        async with async_engine.connect() as conn:
            assert _async_driver(conn) is not None
            await conn.execute(text(f"INSERT INTO {table} VALUES (1)"))
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(store_reads(AsyncEventStore(conn)), 0.3)
            assert conn.invalidated
            with pytest.raises(PendingRollbackError):
                await conn.commit()
            await conn.rollback()
        await async_engine.dispose()

    async def stream_all(store: AsyncEventStore) -> None:
        async for _event in store.stream():
            pass

    reads: dict[str, Callable[[AsyncEventStore], Any]] = {
        "read": lambda store: store.read(),
        "head": lambda store: store.head(),
        "stream": stream_all,
    }
    with engine.connect() as holder:
        holder.execute(text("LOCK TABLE dcb.events IN ACCESS EXCLUSIVE MODE"))
        asyncio.run(scenario(reads[call]))
        holder.rollback()
    with engine.connect() as conn:
        assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() == 0


@pytest.mark.parametrize("run_async", [False, True])
def test_an_invalidated_connection_reconnects_for_the_next_append(
    fresh_db_url: str, engine: Engine, run_async: bool
) -> None:
    tag = f"again:{run_async}"
    if not run_async:
        with engine.connect() as conn:
            EventStore(conn).append(Event("E", {}, [tag]))
            conn.commit()
            conn.invalidate()
            EventStore(conn).append(Event("E", {}, [tag]))
            conn.commit()
    else:

        async def scenario() -> None:
            async_engine = create_async_engine(fresh_db_url)
            async with async_engine.connect() as conn:
                await AsyncEventStore(conn).append(Event("E", {}, [tag]))
                await conn.commit()
                await conn.invalidate()
                await AsyncEventStore(conn).append(Event("E", {}, [tag]))
                await conn.commit()
            await async_engine.dispose()

        asyncio.run(scenario())
    assert count_tagged(engine, tag) == 2


@pytest.mark.skipif(
    tuple(int(p) for p in sqlalchemy.__version__.split(".")[:2]) < (2, 1),
    reason="SQLAlchemy 2.0 delivers the listener's cancellation again at its own later awaits",
)
def test_a_second_cancellation_during_the_invalidation_still_refuses_the_commit(
    fresh_db_url: str, engine: Engine, held_key: str
) -> None:
    """A pool ``invalidate`` listener that waits (an async log sink, say) while a second
    cancellation arrives: the caller must not get back a connection that commits."""

    async def scenario() -> None:
        async_engine = create_async_engine(fresh_db_url)
        task = asyncio.current_task()
        assert task is not None

        @event.listens_for(async_engine.sync_engine.pool, "invalidate")
        def cancel_again(*_args: Any) -> None:
            asyncio.get_running_loop().call_soon(task.cancel)
            await_only(asyncio.sleep(0.3))

        async with async_engine.connect() as conn:
            store = AsyncEventStore(conn, lock_timeout=None)
            with pytest.raises(asyncio.CancelledError):
                async with asyncio.timeout(0.3):
                    await store.append(Event("E", {}, [held_key]))
            with pytest.raises(PendingRollbackError):
                await conn.commit()
            await conn.rollback()
        await async_engine.dispose()

    asyncio.run(scenario())


def test_an_invalidation_cut_short_still_refuses_the_commit(
    engine: Engine, held_key: str, monkeypatch: pytest.MonkeyPatch, alarm: Callable[[float], object]
) -> None:
    """Should the invalidation itself be interrupted and leave the Connection valid (as
    SQLAlchemy 2.0 does; 2.1 clears it all the same), the driver's connection is closed: the
    server rolls the transaction back and the commit fails."""

    def cut_short(_self: Connection, _exception: BaseException | None = None) -> None:
        raise _Interrupted

    with engine.connect() as conn:
        raw = conn.connection.driver_connection
        monkeypatch.setattr(Connection, "invalidate", cut_short)
        alarm(0.3)
        with pytest.raises(_Interrupted):
            EventStore(conn, lock_timeout=None).append(Event("E", {}, [held_key]))
        monkeypatch.undo()
        assert not conn.invalidated and raw is not None and raw.closed
        with pytest.raises(DBAPIError):
            conn.commit()
        conn.rollback()


def _pids_seen_on_invalidation(engine: Engine) -> list[int]:
    """What a pool ``invalidate`` listener reads off the connection (a log sink, say): the
    connection must still be open when the listener runs."""
    seen: list[int] = []

    @event.listens_for(engine.pool, "invalidate")
    def record(dbapi_connection: Any, *_args: Any) -> None:
        seen.append(dbapi_connection.info.backend_pid)

    return seen
