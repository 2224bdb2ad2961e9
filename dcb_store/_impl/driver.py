"""The store's statements on the driver's own connection, when SQLAlchemy would only add cost.

An append is one statement with one row back, a read one statement with rows of fixed
columns. Through ``Connection.execute`` SQLAlchemy compiles parameters, builds result metadata
and wraps every row (about 40 us of client CPU per append, a tenth of it; about 1.5 us per
row read); nothing it adds is needed when no one listens to its events. So when the Connection
and its Engine have no event listeners and no echo, the statement runs on the psycopg
connection underneath, in the same transaction, with its rows in PostgreSQL's binary format
(the server formats and psycopg parses positions, tag arrays, ids and times faster so: about
0.4 us of client CPU and 1 us of wall time per row of a large read). Otherwise (a host that
instruments SQLAlchemy, logs SQL, or runs another driver) it goes through
``Connection.execute``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

import psycopg
from sqlalchemy import Connection, TextClause
from sqlalchemy.exc import DBAPIError

__all__ = ["execute"]

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


def _driver_connection(conn: Connection) -> Any:
    """The psycopg connection under ``conn``, or None when SQLAlchemy must run the statement.

    Only listeners that a statement's execution would call count: ``before_execute``,
    ``after_execute``, ``before_cursor_execute``, ``after_cursor_execute`` and any dialect
    event (``handle_error``, ``do_execute``). Other listeners do not: an Engine made by
    ``engine.execution_options(isolation_level=...)`` carries an ``engine_connect``
    listener, and took SQLAlchemy's path for it (about 100 us of client CPU per append).
    """
    try:
        if conn._echo or conn.dialect._has_events:
            return None
        if conn._has_events or conn.engine._has_events:
            events = conn.dispatch  # the Connection's own listeners joined with its Engine's
            if any(getattr(events, name) for name in _EXECUTION_EVENTS):
                return None
    except AttributeError:  # a SQLAlchemy that names these otherwise: the documented path
        return None
    if conn.dialect.driver != "psycopg":
        return None
    driver = conn.connection.driver_connection
    return driver if hasattr(driver, "pgconn") and hasattr(driver, "execute") else None


def execute(conn: Connection, statement: TextClause, params: dict[str, Any]) -> Sequence[Any]:
    """Run ``statement`` (one of ``statements``) on ``conn``; all its rows, as tuples.

    Driver errors arrive as SQLAlchemy's ``DBAPIError`` on both paths.
    """
    driver = _driver_connection(conn)
    if driver is None:
        return conn.execute(statement, params).all()
    if not conn.in_transaction():
        # what execute's autobegin does: the caller's commit() must see this transaction
        conn.begin()
    sql, names = _driver_sql(statement)
    try:
        rows: Sequence[Any] = driver.execute(
            sql, [params[name] for name in names], binary=True
        ).fetchall()
    except psycopg.Error as exc:
        lost = conn.dialect.is_disconnect(exc, driver, None)  # type: ignore[arg-type]
        if lost:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            sql, params, exc, psycopg.Error, connection_invalidated=lost, dialect=conn.dialect
        ) from exc
    return rows
