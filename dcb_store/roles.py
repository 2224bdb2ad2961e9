"""Least-privilege grants for application roles.

The ``dcb`` schema grants nothing to PUBLIC, not even EXECUTE on its functions, so only its
**owner** (the role that ran the migrations) can use it. The owner alone may change the schema
and erase history (``SELECT dcb.allow_erasure_v1()``, then UPDATE/DELETE, in one transaction).
Grant each application role one of:

- a **reader** reads and monitors: ``EventStore.read``/``stream``/``head``, subscriptions,
  ``lock_count``/``lock_stats``, and plain ``SELECT`` on ``dcb.events``;
- a **runner** is a reader that runs :class:`~dcb_store.ProjectionRunner`: it also reads,
  inserts and updates its rows of ``dcb.checkpoints``;
- a **writer** is a runner that also appends, through the append functions only: no INSERT on
  ``dcb.events`` (the append function runs as the owner and keeps positions, ``recorded_at``
  and the in-flight protocol out of the writer's hands).

None may UPDATE, DELETE or TRUNCATE events, nor change the schema. Each ``grant_*`` first
revokes what the role held in the schema, so calling it again (or another one) leaves the role
with exactly the privileges listed for it.

With several stores in one database (docs/usage.md), ``schema=`` names the store: a grant on
one store's schema gives nothing in another's.
"""

from __future__ import annotations

from typing import Literal

from psycopg import sql
from sqlalchemy import Connection

from dcb_store._impl import statements as st

__all__ = ["grant_reader", "grant_runner", "grant_statements", "grant_writer"]

Kind = Literal["reader", "runner", "writer"]

READ_FUNCTIONS = (
    "read_v1(jsonb, bigint, integer, boolean)",
    "appends_in_flight_v1()",
    "appends_in_flight_v2()",
    "get_advisory_lock_count()",
    "get_advisory_lock_stats()",
)
APPEND_FUNCTIONS = (
    "append_v1(jsonb, text[], jsonb, integer)",  # wrappers, for code of older versions
    "append_v2(jsonb, text[], jsonb, integer)",
    "append_v3(jsonb, text[], jsonb, integer)",
    "append_v4(jsonb, text[], jsonb, integer)",
    "append_v5(jsonb, text[], jsonb, integer)",
)


def grant_statements(
    role: str, *, writer: bool = False, kind: Kind | None = None, schema: str = "dcb"
) -> list[sql.Composed]:
    """The statements that leave ``role`` with exactly the privileges of ``kind`` in ``schema``.

    ``kind`` defaults to ``"writer"`` when ``writer`` else ``"reader"``.
    """
    s = st.for_schema(schema)
    kind = kind or ("writer" if writer else "reader")
    if kind not in ("reader", "runner", "writer"):
        raise ValueError(f"kind must be reader, runner or writer, got {kind!r}")
    r = sql.Identifier(role)
    stmts = [sql.SQL(stmt).format(role=r) for stmt in s.GRANT_RESET]
    functions = list(READ_FUNCTIONS)
    if kind in ("runner", "writer"):
        stmts.append(sql.SQL(s.GRANT_CHECKPOINTS).format(role=r))
    if kind == "writer":
        functions += APPEND_FUNCTIONS
    stmts += [sql.SQL(s.GRANT_EXECUTE).format(function=sql.SQL(f), role=r) for f in functions]
    return stmts


def _grant(conn: Connection, role: str, kind: Kind, schema: str) -> None:
    driver = conn.connection.driver_connection
    for stmt in grant_statements(role, kind=kind, schema=schema):
        driver.execute(stmt)  # type: ignore[union-attr]


def grant_writer(conn: Connection, role: str, *, schema: str = "dcb") -> None:
    """Let ``role`` append, read, monitor and run projections (run as the schema's owner)."""
    _grant(conn, role, "writer", schema)


def grant_runner(conn: Connection, role: str, *, schema: str = "dcb") -> None:
    """Let ``role`` read, monitor and run projections (keep checkpoints), not append."""
    _grant(conn, role, "runner", schema)


def grant_reader(conn: Connection, role: str, *, schema: str = "dcb") -> None:
    """Let ``role`` read and monitor only (run as the schema's owner, in ``conn``'s transaction).

    On a role that could append, end its sessions first: an append still in flight when its
    role loses the grant is no longer trusted by readers' caps (docs/consistency.md).
    """
    _grant(conn, role, "reader", schema)
