"""The store's statements on the driver's own connection, when SQLAlchemy would only add cost.

An append is one statement with one row back, a read one statement with rows of fixed
columns. Through ``Connection.execute`` SQLAlchemy compiles parameters, builds result metadata
and wraps every row (about 40 us of client CPU per append, a tenth of it; about 1.5 us per
row read; through an ``AsyncConnection`` it also hops into a greenlet and back); nothing it
adds is needed when no one listens to a statement's execution. So then the statement runs on
the psycopg connection underneath, in the same transaction, with its rows in PostgreSQL's
binary format (the server formats and psycopg parses positions, tag arrays, ids and times
faster so: about 0.4 us of client CPU and 1 us of wall time per row of a large read).
Otherwise (a host that instruments SQLAlchemy, logs SQL, or runs another driver) it goes
through ``Connection.execute``. The sync and async stores share the rule, the SQL and the
error wrapping; they differ only in awaiting.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import psycopg
from sqlalchemy import Connection, TextClause
from sqlalchemy.engine.util import TransactionalContext
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.util import is_exit_exception

from dcb_store.errors import TransactionStateError

__all__ = ["execute", "execute_async"]

_PARAM = re.compile(r":(\w+)")
#: the Connection events ``Connection.execute`` fires for a statement
_EXECUTION_EVENTS = (
    "before_execute",
    "after_execute",
    "before_cursor_execute",
    "after_cursor_execute",
)


@functools.cache
def _driver_sql(statement: TextClause) -> tuple[str, tuple[str, ...]]:
    """A statement of ``statements`` with positional placeholders, and its parameters' names.

    Positional, not psycopg's named style: naming costs about 15 us per statement (the names
    are mapped to positions on every call). The statements use CAST, never "::".
    """
    return _PARAM.sub("%s", statement.text), tuple(_PARAM.findall(statement.text))


def _driver_connection(conn: Connection, kind: type[Any] = psycopg.Connection) -> Any:
    """The psycopg connection of class ``kind`` under ``conn``, or None (SQLAlchemy runs it).

    Only listeners that a statement's execution would call count: ``before_execute``,
    ``after_execute``, ``before_cursor_execute``, ``after_cursor_execute`` and any dialect
    event (``handle_error``, ``do_execute``). Other listeners do not: an Engine made by
    ``engine.execution_options(isolation_level=...)`` carries an ``engine_connect``
    listener, and took SQLAlchemy's path for it (about 60 us of client CPU per append).
    """
    try:
        if conn._echo or conn.dialect._has_events:
            return None
        if conn._has_events or conn.engine._has_events:
            events = conn.dispatch  # the Connection's own listeners joined with its Engine's
            if any(getattr(events, name) for name in _EXECUTION_EVENTS):
                return None
        if conn._dbapi_connection is None:
            return None  # closed or invalidated: SQLAlchemy reconnects (async: in its greenlet)
    except AttributeError:  # a SQLAlchemy that names these otherwise: the documented path
        return None
    if conn.dialect.driver != "psycopg":
        return None
    driver = conn.connection.driver_connection
    return driver if isinstance(driver, kind) else None


def _ready(conn: Connection) -> bool | None:
    """What ``Connection.execute`` checks before a statement, raising as it does.

    An inactive transaction or savepoint (one that failed, or was rolled back inside its
    ``with`` block) refuses the statement, as does a transaction whose ``with`` block it ran
    outside of. Returns whether the statement would autobegin, or None when this SQLAlchemy
    names its internals otherwise (SQLAlchemy then runs the statement).
    """
    try:
        transaction, nested = conn._transaction, conn._nested_transaction
        if (transaction is not None and not transaction.is_active) or (
            nested is not None and not nested.is_active
        ):
            conn._invalid_transaction()
        elif conn._trans_context_manager:
            TransactionalContext._trans_ctx_check(conn)
        return transaction is None
    except AttributeError:
        return None


def _driver_for(conn: Connection | None, kind: type[Any]) -> tuple[Any, bool] | None:
    """The driver's connection for a statement on ``conn`` and whether it autobegins.

    None when SQLAlchemy runs the statement. The sync and async paths decide alike.
    """
    if conn is None:
        return None
    driver = _driver_connection(conn, kind)
    begins = None if driver is None else _ready(conn)
    return None if begins is None else (driver, begins)


def _autobegin(conn: Connection) -> None:
    """Autobegin as ``Connection.execute`` does, refusing a Connection that cannot begin.

    See :class:`~dcb_store.errors.TransactionStateError`: SQLAlchemy would run the statement
    in a transaction it never commits. Refused before anything is sent.
    """
    conn._autobegin()
    try:
        stuck = (
            conn._transaction is None
            and conn._allow_autobegin
            and not conn._is_autocommit_isolation()
        )
    except AttributeError:  # a SQLAlchemy that names these otherwise: not checked
        return
    if stuck:
        raise TransactionStateError


def _not_begun(conn: Connection) -> bool:
    """Whether ``Connection.execute`` would autobegin for a statement on ``conn``.

    On SQLAlchemy's path :func:`_autobegin` then runs first, for its refusal.
    """
    return getattr(conn, "_transaction", True) is None


def _error(conn: Connection, driver: Any, sql: str, params: Any, exc: psycopg.Error) -> Any:
    """``exc`` as the ``DBAPIError`` ``Connection.execute`` would raise.

    Whether the connection was lost is in its ``connection_invalidated``.
    """
    lost = conn.dialect.is_disconnect(exc, driver, None)  # type: ignore[arg-type]
    return DBAPIError.instance(
        sql,
        params,
        exc,
        psycopg.Error,
        hide_parameters=conn.engine.hide_parameters,
        connection_invalidated=lost,
        dialect=conn.dialect,
    )


def _lost(conn: Connection, exc: BaseException) -> None:
    """Invalidate a lost connection as ``Connection.execute`` does.

    With it, every connection the pool holds from before: they are likely lost too.
    """
    if not conn.invalidated:
        if conn._dbapi_connection is not None:
            conn.engine.pool._invalidate(conn._dbapi_connection, exc)
        conn.invalidate(exc)


# Interruptions: a statement interrupted by cancellation (asyncio's, a timeout around the
# call), KeyboardInterrupt or another exit exception (SQLAlchemy's is_exit_exception: any
# BaseException that is not an Exception, and asyncio's timeout) may have run or not, and
# the driver may be left mid-statement. Connection.execute then invalidates the connection
# (not its pool), so the caller's next statement or commit raises until it rolls back; so
# does the driver path. Without it, a cancelled append could commit with the caller's next
# commit(). Should the invalidation itself be interrupted (a second cancellation while a
# listener waits) and leave the Connection valid (SQLAlchemy 2.0 does; 2.1 clears it all the
# same), the driver's connection is closed: the server rolls the transaction back.


def _finish_if_still_valid(conn: Connection, driver: Any) -> None:
    """Close the driver's connection if an interrupted invalidation left ``conn`` valid.

    Only then: listeners of the pool's ``invalidate`` and ``close`` events, and a psycopg pool
    that takes its connections back on close, need the connection open until SQLAlchemy closes
    it.
    """
    if not conn.invalidated:
        driver.pgconn.finish()


def execute(conn: Connection, statement: TextClause, params: dict[str, Any]) -> Sequence[Any]:
    """Run ``statement`` (one of ``statements``) on ``conn``; all its rows, as tuples.

    Driver errors arrive as SQLAlchemy's ``DBAPIError`` on both paths.
    """
    found = _driver_for(conn, psycopg.Connection)
    if found is None:
        if _not_begun(conn):
            _autobegin(conn)
        return conn.execute(statement, params).all()
    driver, begins = found
    if begins:
        _autobegin(conn)  # the caller's commit() must see this transaction
    sql, names = _driver_sql(statement)
    try:
        rows: Sequence[Any] = driver.execute(
            sql, [params[name] for name in names], binary=True
        ).fetchall()
    except psycopg.Error as exc:
        error = _error(conn, driver, sql, params, exc)
        if error.connection_invalidated:
            _lost(conn, exc)
        raise error from exc
    except BaseException as exc:
        if is_exit_exception(exc):  # an interruption: see above execute()
            try:
                conn.invalidate(exc)
            finally:
                _finish_if_still_valid(conn, driver)
        raise
    return rows


async def execute_async(
    conn: AsyncConnection, statement: TextClause, params: dict[str, Any]
) -> Sequence[Any]:
    """:func:`execute` on an ``AsyncConnection``.

    What may run listeners (the autobegin, invalidation) runs in SQLAlchemy's greenlet.
    """
    sync = conn.sync_connection
    found = _driver_for(sync, psycopg.AsyncConnection)
    if sync is None or found is None:
        if sync is not None and _not_begun(sync):
            await conn.run_sync(_autobegin)
        return (await conn.execute(statement, params)).all()
    driver, begins = found
    if begins:
        await conn.run_sync(_autobegin)
    sql, names = _driver_sql(statement)
    try:
        cursor = await driver.execute(sql, [params[name] for name in names], binary=True)
        rows: Sequence[Any] = await cursor.fetchall()
    except psycopg.Error as exc:
        error = _error(sync, driver, sql, params, exc)
        if error.connection_invalidated:
            await conn.run_sync(_lost, exc)
        raise error from exc
    except BaseException as exc:
        if is_exit_exception(exc):  # an interruption: see above execute()
            try:
                # in SQLAlchemy's greenlet, as its own (not shielded: a shield would let the
                # caller go on while the invalidation waits in a listener)
                await conn.invalidate(exc)
            finally:
                _finish_if_still_valid(sync, driver)
        raise
    return rows
