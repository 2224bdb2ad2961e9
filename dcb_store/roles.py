"""Least-privilege grants for application roles.

A new ``dcb`` schema grants nothing to PUBLIC, so only its owner (the role that ran the
migrations) can use it. Grant an application role what it needs, and nothing more:

- a **writer** may append and read: INSERT and SELECT on the events, the key clocks it bumps,
  the position sequence, and the functions;
- a **reader** may read and monitor: SELECT on the events and the sequence (for safe heads).

Neither may UPDATE, DELETE or TRUNCATE events, nor change the schema. The functions are
SECURITY INVOKER: they run with the caller's own privileges.
"""

from __future__ import annotations

from psycopg import sql
from sqlalchemy import Connection

__all__ = ["grant_reader", "grant_statements", "grant_writer"]

_READ_FUNCTIONS = (
    "lock_key_v1(text)",
    "query_key_names_v1(jsonb)",
    "query_keys_v1(jsonb)",
    "in_flight_cap_v1(bigint[])",
    "read_v1(jsonb, bigint, integer, boolean)",
    "appends_in_flight_v1()",
    "appends_in_flight_v2()",
    "get_advisory_lock_count()",
    "get_advisory_lock_stats()",
)


def grant_statements(role: str, *, writer: bool) -> list[sql.Composed]:
    """The GRANT statements for ``role`` (a reader, or a writer when ``writer``)."""
    r = sql.Identifier(role)
    stmts = [
        sql.SQL("GRANT USAGE ON SCHEMA dcb TO {}").format(r),
        sql.SQL("GRANT SELECT ON dcb.events TO {}").format(r),
        sql.SQL("GRANT SELECT ON SEQUENCE dcb.events_position_seq TO {}").format(r),
    ]
    functions = list(_READ_FUNCTIONS)
    if writer:
        stmts += [
            sql.SQL("GRANT INSERT ON dcb.events TO {}").format(r),
            sql.SQL("GRANT SELECT, INSERT, UPDATE ON dcb.key_clocks TO {}").format(r),
            sql.SQL("GRANT USAGE ON SEQUENCE dcb.events_position_seq TO {}").format(r),
        ]
        functions += [
            "append_v1(jsonb, text[], jsonb, integer)",
            "append_v2(jsonb, text[], jsonb, integer)",
            "append_v3(jsonb, text[], jsonb, integer)",
        ]
    stmts += [
        sql.SQL("GRANT EXECUTE ON FUNCTION dcb.{} TO {}").format(sql.SQL(f), r) for f in functions
    ]
    return stmts


def _grant(conn: Connection, role: str, *, writer: bool) -> None:
    driver = conn.connection.driver_connection
    for stmt in grant_statements(role, writer=writer):
        driver.execute(stmt)  # type: ignore[union-attr]


def grant_writer(conn: Connection, role: str) -> None:
    """Let ``role`` append and read (run as the schema's owner, in ``conn``'s transaction)."""
    _grant(conn, role, writer=True)


def grant_reader(conn: Connection, role: str) -> None:
    """Let ``role`` read and monitor only (run as the schema's owner, in ``conn``'s transaction)."""
    _grant(conn, role, writer=False)
