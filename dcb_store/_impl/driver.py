"""The append on the driver's own connection, when SQLAlchemy would only add cost.

An append is one statement with one row back. Through ``Connection.execute`` SQLAlchemy
compiles parameters and builds result metadata for it (about 40 us of client CPU, a tenth
of an append); nothing it adds is needed when no one listens to its events. So when the
Connection and its Engine have no event listeners and no echo, the statement runs on the
psycopg connection underneath, in the same transaction. Otherwise (a host that instruments
SQLAlchemy, logs SQL, or runs another driver) it goes through ``Connection.execute`` as before.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError

from dcb_store._impl import statements as st

__all__ = ["execute_append"]

# statements.APPEND in psycopg's parameter style (its text has CASTs, no "::" to confuse).
_APPEND_SQL = re.sub(r":(\w+)", r"%(\1)s", st.APPEND.text)


def _driver_connection(conn: Connection) -> Any:
    """The psycopg connection under ``conn``, or None when SQLAlchemy must run the statement."""
    try:
        if conn._has_events or conn.engine._has_events or conn._echo:
            return None
    except AttributeError:  # a SQLAlchemy that names these otherwise: the documented path
        return None
    if conn.dialect.driver != "psycopg":
        return None
    driver = conn.connection.driver_connection
    return driver if hasattr(driver, "pgconn") and hasattr(driver, "execute") else None


def execute_append(conn: Connection, params: dict[str, Any]) -> Sequence[Any]:
    """Run :data:`statements.APPEND` on ``conn``; its one row.

    Driver errors arrive as SQLAlchemy's ``DBAPIError`` on both paths.
    """
    driver = _driver_connection(conn)
    if driver is None:
        return conn.execute(st.APPEND, params).one()
    if not conn.in_transaction():
        # what execute's autobegin does: the caller's commit() must see this transaction
        conn.begin()
    import psycopg  # the dialect is psycopg's: the package is there

    try:
        row: Sequence[Any] | None = driver.execute(_APPEND_SQL, params).fetchone()
    except psycopg.Error as exc:
        lost = conn.dialect.is_disconnect(exc, driver, None)  # type: ignore[arg-type]
        if lost:
            conn.invalidate(exc)
        raise DBAPIError.instance(
            _APPEND_SQL,
            params,
            exc,
            psycopg.Error,
            connection_invalidated=lost,
            dialect=conn.dialect,
        ) from exc
    assert row is not None  # append_v4 returns exactly one row
    return row
